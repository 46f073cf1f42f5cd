"""persea distill end to end on tiny models: outputs, resume after kill -9, refusals."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml

from persea.distill.run import run_distill
from persea.errors import PerseaError
from persea.project import load_project

from .conftest import write_distill_project


def losses(run_dir):
    with open(run_dir / "loss.csv", newline="") as f:
        return [(int(r["step"]), float(r["loss"]), float(r["ce"]), float(r["kd"]),
                 float(r["alm"])) for r in csv.DictReader(f)]


def test_distill_writes_student_curve_and_checkpoints(project_copy):
    result = run_distill(load_project(project_copy))
    assert (result.student_dir / "model.safetensors").is_file()
    assert (result.student_dir / "tokenizer.json").is_file()
    assert (result.run_dir / "loss.png").stat().st_size > 1000
    rows = losses(result.run_dir)
    assert [r[0] for r in rows] == list(range(1, 11))
    assert all(np.isfinite(r[1:]).all() for r in rows)
    assert all(r[3] >= 0 and r[4] >= 0 for r in rows)  # kd and alm were computed
    ckpts = sorted(p.name for p in (result.run_dir / "checkpoints").iterdir())
    assert ckpts == ["step-0000008", "step-0000010"]  # the last two are kept
    assert result.examples == 36 and result.used == 36

    from persea.models.sources import load_hf_dir

    student = load_hf_dir("student", result.student_dir)
    assert len(student.generate(["What is 1 + 2?"], 4)) == 1


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from persea.distill import trainer
    real, n, die_after = trainer.save_checkpoint, [0], int(sys.argv[2])
    def save_then_die(*args, **kwargs):
        out = real(*args, **kwargs)
        n[0] += 1
        if n[0] == die_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    trainer.save_checkpoint = save_then_die
    sys.argv = ["persea", "distill", "--project", sys.argv[1], "--eval-per-skill", "0"]
    from persea.cli import main
    main()
""")


def test_kill_9_then_resume_continues_the_same_loss_curve(project_copy, tmp_path, harvested):
    import shutil

    reference = tmp_path / "ref"
    shutil.copytree(harvested, reference)
    ref = run_distill(load_project(reference))
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(project_copy), "2"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run_dir = project_copy / "runs" / "student"
    assert [r[0] for r in losses(run_dir)] == list(range(1, 9))  # died after step 8's save
    resumed = run_distill(load_project(project_copy))
    assert resumed.summary["resumed_from"] == 8
    a, b = losses(ref.run_dir), losses(run_dir)
    assert [r[0] for r in a] == [r[0] for r in b]
    np.testing.assert_allclose([r[1:] for r in a], [r[1:] for r in b], rtol=1e-4, atol=1e-5)


def test_resume_against_a_changed_config_is_refused(project_copy, tiny_model_dir):
    run_distill(load_project(project_copy))
    before = (project_copy / "runs" / "student" / "loss.csv").read_bytes()
    data = yaml.safe_load((project_copy / "persea.yaml").read_text())
    data["distill"]["lr"] = 0.001
    (project_copy / "persea.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PerseaError, match=r"distill.lr: was 0.003, now 0.001"):
        run_distill(load_project(project_copy))
    assert (project_copy / "runs" / "student" / "loss.csv").read_bytes() == before


def test_cache_missing_a_teacher_or_from_another_project(project_copy, tiny_model_dir):
    data = yaml.safe_load((project_copy / "persea.yaml").read_text())
    data["teachers"].append({"name": "gamma", "path": str(tiny_model_dir)})
    (project_copy / "persea.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PerseaError, match="no responses from teacher\\(s\\) gamma"):
        run_distill(load_project(project_copy))
    data["teachers"].pop()
    data["name"] = "other"
    (project_copy / "persea.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PerseaError, match="belongs to project 'd', not 'other'"):
        run_distill(load_project(project_copy))
    assert not (project_copy / "runs").exists()


def test_no_harvest_yet(tmp_path, tiny_model_dir):
    d = write_distill_project(tmp_path / "p", tiny_model_dir)
    with pytest.raises(PerseaError, match="no finished harvest"):
        run_distill(load_project(d))


def test_cli_prints_what_each_teacher_transferred_and_warns_on_one_that_gives_nothing(
        project_copy, capsys, monkeypatch):
    from persea.skills import get_world
    from tests.cli_helpers import run_cli

    data = yaml.safe_load((project_copy / "persea.yaml").read_text())
    data["distill"]["weighting"] = ["best_teacher"]
    (project_copy / "persea.yaml").write_text(yaml.safe_dump(data))
    run_dir = project_copy / "runs" / "student"
    run_dir.mkdir(parents=True)  # dev scores measured earlier: alpha is best on every skill
    (run_dir / "dev_scores.json").write_text(json.dumps(
        {s: {"alpha": 0.9, "beta": 0.1} for s in get_world().skills}))
    code, out, err = run_cli(capsys, monkeypatch, "distill", "-p", str(project_copy),
                             "--eval-per-skill", "0")
    assert code == 0, err
    lines = out.splitlines()
    head = next(line for line in lines if "teacher" in line and "dropped (why)" in line)
    for col in ("in", "positions with target", "carried", "unmatched"):
        assert col in head
    alpha = next(line for line in lines if "│ alpha" in line)
    beta = next(line for line in lines if "│ beta" in line)
    assert "18/18" in alpha and "18/18 (100%)" not in beta and "0/18" in beta
    assert "best_teacher: not best on skill" in beta  # not cut at 80 columns when piped
    assert f"teacher 'beta' contributes nothing: on the dev split it is not the best teacher" \
        in " ".join(err.split())
    assert "alpha' contributes nothing" not in err
    saved = json.loads((run_dir / "transfer.json").read_text())
    assert [t["teacher"] for t in saved["teachers"]] == ["alpha", "beta"]
    assert saved["teachers"][1]["weighted_in"] == 0 and len(saved["warnings"]) == 1
    a = saved["teachers"][0]
    assert 0 < a["target_positions"] <= a["response_positions"]
    assert a["carried_mass"] + a["unmatched_mass"] == pytest.approx(1, abs=0.02)
    assert json.loads((run_dir / "run.json").read_text())["transfer"] == "transfer.json"
    # the reference to transfer.json does not count as a changed configuration on resume
    assert run_distill(load_project(project_copy)).summary["resumed_from"] == 10


def test_a_cut_checkpoint_write_is_ignored_and_removed(project_copy, tmp_path, harvested):
    """kill -9 or a full disk while step 10's checkpoint was written: what is left is a
    `.tmp` folder with a partial file, the newest name in checkpoints/."""
    import shutil

    from safetensors.torch import load_file

    reference = tmp_path / "ref"
    shutil.copytree(harvested, reference)
    ref = run_distill(load_project(reference))
    run_dir = project_copy / "runs" / "student"
    shutil.copytree(ref.run_dir, run_dir)
    shutil.rmtree(run_dir / "student")
    shutil.rmtree(run_dir / "checkpoints" / "step-0000010")
    cut = run_dir / "checkpoints" / "step-0000999.tmp"
    cut.mkdir()
    whole = (ref.run_dir / "checkpoints" / "step-0000010" / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(whole[:len(whole) // 3])

    resumed = run_distill(load_project(project_copy))
    assert resumed.summary["resumed_from"] == 8
    assert not cut.exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step-0000008", "step-0000010"]
    a = load_file(ref.student_dir / "model.safetensors")
    b = load_file(resumed.student_dir / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key].float().numpy(), b[key].float().numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_a_stray_shard_is_a_warning_not_training_data(project_copy):
    import shutil

    cache = project_copy / "cache" / "harvest"
    shutil.copy(cache / "alpha" / "shard-00000.parquet", cache / "alpha" / "shard-00009.parquet")
    result = run_distill(load_project(project_copy))
    assert "shard-00009.parquet is not listed in the harvest's manifest.json; ignored" in \
        result.warnings[0]
    assert result.examples == 36


def test_a_second_distill_on_a_run_directory_is_refused(project_copy):
    from persea.locks import stage_lock

    run_dir = project_copy / "runs" / "student"
    with stage_lock(run_dir, "persea distill"):  # as another `persea distill` would
        with pytest.raises(PerseaError, match=r"runs/student is in use by another `persea "
                           r"distill` \(pid \d+ on "):
            run_distill(load_project(project_copy))
    assert (run_dir / ".persea.lock").read_bytes() == b""
    assert sorted(p.name for p in run_dir.iterdir()) == [".persea.lock"]  # nothing else


def test_the_closing_table_scores_as_many_items_as_eval_per_skill(project_copy, capsys,
                                                                  monkeypatch):
    from tests.cli_helpers import run_cli

    data = yaml.safe_load((project_copy / "persea.yaml").read_text())
    data["eval"] = {"per_skill": 2}
    (project_copy / "persea.yaml").write_text(yaml.safe_dump(data))
    code, out, err = run_cli(capsys, monkeypatch, "distill", "-p", str(project_copy))
    assert code == 0, err
    assert "exact match on the toy-world test split (2 items per skill)" in out
