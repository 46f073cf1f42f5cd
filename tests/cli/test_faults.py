"""Failures a person causes or meets on the command line are one line, never a traceback:
usage errors, an unreadable project file, an impossible student, a full disk or a directory
that cannot be written; and the same command run again after the fault finishes as an
undisturbed run does."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from persea.errors import PerseaError
from persea.harvest import HarvestJob, run_harvest
from persea.project import load_project, parse_project
from tests.cli_helpers import run_cli
from tests.distill.conftest import harvested, write_distill_project  # noqa: F401 - fixture
from tests.harvest.test_harvest import run_cli as run_cli_process
from tests.harvest.test_harvest import tree, write_project


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


@pytest.mark.parametrize("args, says", [
    (["bogus"], "No such command 'bogus'"),
    (["harvest", "--projcet", "x"], "No such option: --projcet"),
    (["eval", "-p"], "'-p' requires an argument"),
])
def test_usage_errors_are_one_line_and_a_hint(capsys, monkeypatch, args, says):
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and says in lines[0] and lines[0].startswith("error:"), err
    assert lines[1].startswith("see `persea") and lines[1].endswith("--help`")


def test_project_file_that_is_not_utf8_is_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "persea.yaml").write_bytes(b"name: caf\xe9\n")
    code, _, err = run_cli(capsys, monkeypatch, "harvest", "--project", str(tmp_path))
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert "persea.yaml: not UTF-8 text (byte 0xe9 at offset 9)" in line


def test_student_heads_must_divide_hidden_size(tmp_path, tiny_model_dir, capsys,
                                               monkeypatch):
    project = write_distill_project(tmp_path / "p", tiny_model_dir, student={
        "hidden_size": 100, "heads": 3, "layers": 1, "intermediate_size": 64})
    code, _, err = run_cli(capsys, monkeypatch, "distill", "--project", str(project))
    assert code == 2 and "Traceback" not in err
    (line,) = error_lines(err)
    assert "distill.student: hidden_size 100 is not divisible by heads 3" in line
    assert sorted(p.name for p in project.iterdir()) == ["persea.yaml"]  # nothing written


@pytest.mark.parametrize("section, field", [
    ("distill", "steps"), ("distill", "batch_size"), ("eval", "per_skill"),
    ("harvest", "top_k"),
])
def test_a_bool_is_not_an_integer(section, field):
    with pytest.raises(PerseaError, match=rf"{section}\.{field}: Input should be a valid "
                       r"integer \(found: True\)"):
        parse_project({"name": "x", "teachers": [{"name": "a", "builtin": "qwen3-toy"}],
                       section: {field: True}})


def test_a_loading_error_is_reported_whole(tmp_path, tiny_model_dir, monkeypatch):
    from persea.models import sources

    def fail(*args, **kwargs):
        raise OSError("Can't load tokenizer for 'x'. If you were trying to load it,\n"
                      "make sure 'x' is the correct path to a directory.")

    monkeypatch.setattr(sources, "_load_transformers", fail)
    with pytest.raises(PerseaError) as caught:
        sources.load_hf_dir("t", tiny_model_dir)
    assert caught.value.message.endswith(
        "If you were trying to load it, make sure 'x' is the correct path to a directory.")


# A harvest whose third shard write fails the way pyarrow fails on a full disk or an
# unwritable directory: part of the file written, then an OSError that names no file.
_FAULTY_HARVEST = textwrap.dedent("""
    import sys
    import pyarrow.parquet as pq
    real, calls, errno_ = pq.write_table, [0], int(sys.argv[2])
    def write_then_fail(table, where, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            open(where, "wb").write(b"PAR1 half a shard")
            raise OSError(f"[Errno {errno_}] Error writing bytes to file")
        return real(table, where, **kwargs)
    pq.write_table = write_then_fail
    sys.argv = ["persea", "harvest", "--project", sys.argv[1]]
    from persea.cli import main
    main()
""")


@pytest.mark.parametrize("errno_, status, advice", [
    (28, 1, "no space left on the device; free some space and run the same command again"),
    (13, 2, "permission denied; make it writable"),
])
def test_harvest_on_a_full_disk_is_one_line_and_resumes(tmp_path, tiny_model_dir, errno_,
                                                        status, advice):
    reference = run_harvest(HarvestJob.of(load_project(
        write_project(tmp_path / "ref", tiny_model_dir))))
    victim = write_project(tmp_path / "victim", tiny_model_dir)
    proc = subprocess.run([sys.executable, "-c", _FAULTY_HARVEST, str(victim), str(errno_)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == status, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert "alpha/shard-00002.parquet: " + advice in line, line
    out = victim / "cache" / "harvest"
    assert not list(out.rglob(".*.tmp-*"))  # the half-written temporary is gone
    again = run_cli_process("harvest", "--project", str(victim))
    assert again.returncode == 0, again.stderr[-2000:]
    assert tree(out) == tree(reference.out)


_FAULTY_DISTILL = textwrap.dedent("""
    import errno, os, sys
    import torch
    real = torch.save
    def save_then_fail(obj, where, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
    torch.save = save_then_fail
    sys.argv = ["persea", "distill", "--project", sys.argv[1], "--eval-per-skill", "0"]
    from persea.cli import main
    main()
""")


def test_distill_on_a_full_disk_is_one_line_and_resumes(harvested, tmp_path):
    import shutil

    project = tmp_path / "p"
    shutil.copytree(harvested, project)
    proc = subprocess.run([sys.executable, "-c", _FAULTY_DISTILL, str(project)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert "step-0000004.tmp/trainer.pt: no space left on the device" in line, line
    again = run_cli_process("distill", "--project", str(project), "--eval-per-skill", "0")
    assert again.returncode == 0, again.stderr[-2000:]
    checkpoints = project / "runs" / "student" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000008", "step-0000010"]


@pytest.mark.parametrize("command", ["eval", "init", "serve"])
def test_help_shows_no_type_placeholder_for_flags(capsys, monkeypatch, command):
    code, out, _ = run_cli(capsys, monkeypatch, command, "--help")
    assert code == 0 and "--help" in out
    assert "<bool>" not in out


def test_gguf_conversion_draws_no_progress_bar(capfd):
    from transformers import modeling_gguf_pytorch_utils as conversion

    from persea.models.sources import quiet_gguf_conversion

    with quiet_gguf_conversion():
        for _ in conversion.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors"):
            pass
    assert "Converting" not in capfd.readouterr().err
    for _ in conversion.tqdm(range(3), desc="Converting", file=sys.stderr):  # restored
        pass
    assert "Converting" in capfd.readouterr().err
