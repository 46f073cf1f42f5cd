"""Harvest end to end on tiny models: contents, resume after kill -9, and refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from persea.errors import PerseaError
from persea.cache import quant
from persea.harvest import HarvestJob, run_harvest
from persea.project import load_project


def write_project(directory: Path, model_dir: Path, **overrides) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "name": "t",
        "teachers": [{"name": "alpha", "path": str(model_dir)},
                     {"name": "beta", "path": str(model_dir)}],
        "prompts": {"toyworld": {"per_skill": 4}},
        "harvest": {"shard_size": 4, "batch_size": 3, "max_new_tokens": 8, "top_k": 16},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    (directory / "persea.yaml").write_text(yaml.safe_dump(data))
    return directory


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_cache_contents(tmp_path, tiny_model_dir):
    proj = load_project(write_project(tmp_path / "p", tiny_model_dir))
    result = run_harvest(HarvestJob.of(proj))
    out = result.out
    assert result.prompts == 24
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["teachers"]) == {"alpha", "beta"}
    alpha = manifest["teachers"]["alpha"]
    assert len(alpha["shards"]) == 6 and alpha["responses"] == 24
    assert alpha["id_dtype"] == "uint16"
    assert len(alpha["fingerprint"]) == 64 and len(alpha["tokenizer_fingerprint"]) == 64
    assert (out / "alpha" / "tokenizer" / "tokenizer.json").is_file()

    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    table = pq.read_table(out / "alpha" / "shard-00001.parquet")
    assert table.column("prompt_index").to_pylist() == [4, 5, 6, 7]
    row = table.slice(0, 1).to_pylist()[0]
    assert row["prompt_id"] == prompts[4]["id"]
    n = len(row["token_ids"])
    assert n > 0 and len(row["span_start"]) == len(row["span_end"]) == len(row["logprob"]) == n
    assert all(0 <= s <= e <= len(row["text"]) for s, e in zip(row["span_start"], row["span_end"]))
    codes = np.array(row["topk_q"], np.uint8)
    assert codes.shape == (n, 16)
    lps = quant.dequantize(codes)
    assert np.all(np.diff(lps, axis=1) <= 0)  # stored best first
    # greedy: the chosen token is the top-1, within the quantisation step
    assert np.array(row["topk_ids"])[:, 0].tolist() == row["token_ids"]
    assert np.allclose(lps[:, 0], row["logprob"], atol=quant.STEP / 2 + 1e-6)
    tail = np.array(row["tail_mass"], np.float32)
    assert np.all((tail >= 0) & (tail <= 1))


def test_under_100_bytes_per_token_at_top_32(tmp_path, tiny_model_dir):
    """The issue's target, on an untrained model (near-uniform top-k: the hard case for
    compression) and shards of a realistic size, where the file footer is amortised."""
    project_dir = write_project(tmp_path / "p", tiny_model_dir, teachers=[
        {"name": "alpha", "path": str(tiny_model_dir)}],
        prompts={"toyworld": {"per_skill": 8}},
        harvest={"shard_size": 48, "batch_size": 16, "max_new_tokens": 16, "top_k": 32})
    result = run_harvest(HarvestJob.of(load_project(project_dir)))
    assert result.tokens == 48 * 16
    assert 0 < result.bytes_per_token < 100
    assert result.teachers[0].stats["max_abs_logprob"] <= quant.STEP / 2 + 1e-6


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from persea.cache import writer
    real, calls, die_at = writer.write_atomic, [0], int(sys.argv[2])
    def write_then_die(path, write):
        if path.name.startswith("shard-"):
            calls[0] += 1
            if calls[0] == die_at:
                write(path.with_name(f".{path.name}.tmp-{os.getpid()}"))  # half done
                os.kill(os.getpid(), signal.SIGKILL)
        return real(path, write)
    writer.write_atomic = write_then_die
    sys.argv = ["persea", "harvest", "--project", sys.argv[1]]
    from persea.cli import main
    main()
""")


def test_kill_9_mid_shard_then_resume_is_byte_identical(tmp_path, tiny_model_dir):
    ref = load_project(write_project(tmp_path / "ref", tiny_model_dir))
    reference = run_harvest(HarvestJob.of(ref))
    victim = write_project(tmp_path / "victim", tiny_model_dir)
    proc = subprocess.run([sys.executable, "-c", _KILLER, str(victim), "8"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    out = victim / "cache" / "harvest"
    assert not (out / "manifest.json").exists()
    assert len(list(out.rglob("shard-*.parquet"))) == 7  # 6 of alpha + 1 of beta, whole
    assert list(out.rglob(".shard-*.tmp-*"))  # the interrupted write left only a temporary

    resumed = run_harvest(HarvestJob.of(load_project(victim)))
    assert [t.shards_skipped for t in resumed.teachers] == [6, 1]
    assert [t.shards_written for t in resumed.teachers] == [0, 5]
    assert not list(out.rglob(".*.tmp-*"))
    assert tree(out) == tree(reference.out)


def test_changed_settings_are_refused_and_nothing_is_overwritten(tmp_path, tiny_model_dir):
    project_dir = write_project(tmp_path / "p", tiny_model_dir)
    result = run_harvest(HarvestJob.of(load_project(project_dir)))
    before = tree(result.out)
    write_project(project_dir, tiny_model_dir, harvest={"top_k": 8})
    with pytest.raises(PerseaError, match=r"different settings \(top_k: cache has 16, now 8\)"):
        run_harvest(HarvestJob.of(load_project(project_dir)))
    assert tree(result.out) == before


def test_missing_teacher_path_fails_before_any_shard(tmp_path, tiny_model_dir):
    project_dir = write_project(tmp_path / "p", tiny_model_dir, teachers=[
        {"name": "ghost", "path": "no/such/model"}])
    with pytest.raises(PerseaError, match="teacher 'ghost': path does not exist"):
        run_harvest(HarvestJob.of(load_project(project_dir)))
    assert not list(project_dir.rglob("*.parquet"))


def test_malformed_prompt_line_names_file_and_line(tmp_path, tiny_model_dir):
    project_dir = write_project(tmp_path / "p", tiny_model_dir)
    data = yaml.safe_load((project_dir / "persea.yaml").read_text())
    data["prompts"] = {"file": "prompts.jsonl"}
    (project_dir / "persea.yaml").write_text(yaml.safe_dump(data))
    (project_dir / "prompts.jsonl").write_text(
        '{"id": "a", "prompt": "What is 1 + 1?"}\n\n{"id": "b", "prompt": "x",}\n')
    with pytest.raises(PerseaError, match=r"prompts.jsonl:3: not valid JSON"):
        run_harvest(HarvestJob.of(load_project(project_dir)))
    (project_dir / "prompts.jsonl").write_text('{"id": "a", "prompt": ""}\n')
    with pytest.raises(PerseaError, match=r"prompts.jsonl:1: field 'prompt' must be a non-empty"):
        run_harvest(HarvestJob.of(load_project(project_dir)))
    (project_dir / "prompts.jsonl").write_text('{"id": "a", "prompt": "q"}\n{"id": "a", "prompt": "r"}\n')
    with pytest.raises(PerseaError, match=r"prompts.jsonl:2: id 'a' already used on line 1"):
        run_harvest(HarvestJob.of(load_project(project_dir)))
    assert not (project_dir / "cache").exists()


def test_prompt_file_harvest_without_answers(tmp_path, tiny_model_dir):
    project_dir = write_project(tmp_path / "p", tiny_model_dir, teachers=[
        {"name": "alpha", "path": str(tiny_model_dir)}])
    data = yaml.safe_load((project_dir / "persea.yaml").read_text())
    data["prompts"] = {"file": "prompts.jsonl"}
    (project_dir / "persea.yaml").write_text(yaml.safe_dump(data))
    (project_dir / "prompts.jsonl").write_text(
        '{"prompt": "Translate: héllo wörld"}\n{"id": "x", "prompt": "日本語?"}\n')
    result = run_harvest(HarvestJob.of(load_project(project_dir)))
    assert result.prompts == 2 and result.teachers[0].checked == 0


def run_cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "persea.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def test_cli_bad_input_is_one_red_line_and_exit_2(tmp_path, tiny_model_dir):
    project_dir = write_project(tmp_path / "p", tiny_model_dir, harvest={"top_kk": 3})
    proc = run_cli("harvest", "--project", str(project_dir))
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "harvest.top_kk: unknown field" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_init_then_refuses_to_overwrite(tmp_path):
    proc = run_cli("init", str(tmp_path / "new"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "new" / "persea.yaml").is_file()
    proc = run_cli("init", str(tmp_path / "new"))
    assert proc.returncode == 2 and "already exists" in proc.stderr


def test_workers_split_shards_and_last_run_writes_manifest(tmp_path, tiny_model_dir):
    ref = load_project(write_project(tmp_path / "ref", tiny_model_dir))
    reference = run_harvest(HarvestJob.of(ref))
    proj = load_project(write_project(tmp_path / "split", tiny_model_dir))
    assert run_harvest(HarvestJob.of(proj), teachers=["alpha"], worker=(0, 2)) is None
    out = proj.resolve("cache/harvest")
    assert sorted(p.name for p in (out / "alpha").glob("shard-*")) == [
        "shard-00000.parquet", "shard-00002.parquet", "shard-00004.parquet"]
    # alpha's odd shards, beta's odd shards
    assert run_harvest(HarvestJob.of(proj), worker=(1, 2)) is None
    final = run_harvest(HarvestJob.of(proj))  # beta's even shards, then the manifest
    assert final is not None and tree(final.out) == tree(reference.out)
    with pytest.raises(PerseaError, match="--teacher gamma: no such teacher"):
        run_harvest(HarvestJob.of(proj), teachers=["gamma"])
    with pytest.raises(PerseaError, match="--worker 2/2"):
        run_harvest(HarvestJob.of(proj), worker=(2, 2))


def test_teacher_changed_after_a_complete_harvest_is_refused(tmp_path, tiny_model_dir):
    import shutil

    from tests.conftest import build_tiny_qwen

    teacher = tmp_path / "teacher"
    shutil.copytree(tiny_model_dir, teacher)
    project_dir = write_project(tmp_path / "p", teacher)
    result = run_harvest(HarvestJob.of(load_project(project_dir)))
    before = tree(result.out)
    assert run_cli("harvest", "--project", str(project_dir)).returncode == 0  # unchanged: fine
    build_tiny_qwen(teacher, seed=1)  # other weights, same tokenizer
    proc = run_cli("harvest", "--project", str(project_dir))
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "teacher 'alpha' changed since the harvest" in lines[0], \
        proc.stderr
    assert tree(result.out) == before
