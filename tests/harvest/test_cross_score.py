"""Cross-scoring in the harvest: every teacher scores the others' responses, resumably."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from persea.errors import PerseaError
from persea.cache import quant
from persea.cache.format import SHARD_PATTERN
from persea.harvest import HarvestJob, cross, run_harvest
from persea.project import TeacherSpec, load_project

from .test_harvest import tree, write_project

BUILTINS = ["qwen3-toy", "gemma3-toy", "gptoss-toy"]


def write_builtin_project(directory):
    directory.mkdir(parents=True, exist_ok=True)
    data = {"name": "x", "teachers": [{"name": n, "builtin": n} for n in BUILTINS],
            "prompts": {"toyworld": {"per_skill": 1}},
            "harvest": {"shard_size": 3, "batch_size": 3, "max_new_tokens": 10, "top_k": 8,
                        "cross_score": True, "backend": "transformers"}}
    (directory / "persea.yaml").write_text(yaml.safe_dump(data))
    return directory


@pytest.fixture(scope="module")
def builtin_harvest(tmp_path_factory):
    """The three built-in teachers (three tokenizers) on six prompts, cross-scored."""
    d = write_builtin_project(tmp_path_factory.mktemp("cross") / "p")
    return d, run_harvest(HarvestJob.of(load_project(d)))


def test_every_teacher_scores_every_other_on_the_same_text(builtin_harvest):
    _, result = builtin_harvest
    out = result.out
    manifest = json.loads((out / "manifest.json").read_text())
    assert {s: sorted(a) for s, a in manifest["scores"].items()} == {
        "qwen3-toy": ["gemma3-toy", "gptoss-toy"], "gemma3-toy": ["gptoss-toy", "qwen3-toy"],
        "gptoss-toy": ["gemma3-toy", "qwen3-toy"]}
    assert result.scores == manifest["scores"]
    from transformers import AutoTokenizer

    for scorer, authors in manifest["scores"].items():
        tok = AutoTokenizer.from_pretrained(str(out / scorer / "tokenizer"))
        for author, entry in authors.items():
            assert entry["rows"] == result.prompts == 6 and len(entry["shards"]) == 2
            assert entry["same_text"] == 6  # these tokenizers reproduce every text
            for i in range(2):
                name = SHARD_PATTERN.format(i)
                mine = pq.read_table(out / "_scores" / scorer / author / name)
                theirs = pq.read_table(out / author / name)
                assert mine.schema.equals(pq.read_table(out / scorer / name).schema)
                assert mine.column("prompt_index").to_pylist() == \
                    theirs.column("prompt_index").to_pylist()
                assert mine.column("text").to_pylist() == theirs.column("text").to_pylist()
                for row in mine.to_pylist():
                    n = len(row["token_ids"])
                    # the scorer's own tokenisation of the text, no end-of-turn token
                    assert row["token_ids"] == tok(row["text"], add_special_tokens=False)[
                        "input_ids"]
                    assert len(row["span_start"]) == len(row["logprob"]) == n
                    lps = quant.dequantize(np.array(row["topk_q"], np.uint8).reshape(n, 8))
                    # the chosen token is at most as likely as the top candidate
                    assert np.all(np.array(row["logprob"]) <= lps[:, 0] + quant.STEP)
                    tail = np.array(row["tail_mass"], np.float32)
                    assert np.all((tail >= 0) & (tail <= 1))
    # response shards are where they always were: a student corpus does not see scores
    assert sorted(p.parent.name for p in out.glob("*/shard-00000.parquet")) == sorted(BUILTINS)


def test_resume_after_losing_a_score_shard_is_byte_identical(builtin_harvest, tmp_path):
    project_dir, result = builtin_harvest
    copy = tmp_path / "p"
    shutil.copytree(project_dir, copy)
    out = copy / "cache" / "harvest"
    victim = out / "_scores" / "gptoss-toy" / "qwen3-toy" / SHARD_PATTERN.format(1)
    victim.unlink()
    (out / "manifest.json").unlink()
    # what a kill in the middle of that shard's write leaves behind
    (victim.parent / f".{victim.name}.tmp-99999").write_bytes(b"half a parquet file")
    calls = []

    def load(spec):
        from persea.models.sources import load_teacher

        calls.append(spec.name)
        return load_teacher(spec)

    again = run_harvest(HarvestJob.of(load_project(copy)), load=load)
    assert calls == ["gptoss-toy"]  # only the scorer with missing work was loaded
    assert [t.shards_written for t in again.teachers] == [0, 0, 0]
    assert tree(out) == tree(result.out)


def test_cross_scoring_can_be_added_to_a_finished_cache(tiny_cross_reference, tmp_path,
                                                        tiny_model_dir):
    """Scores only add files: the responses do not depend on the option, so turning it on
    for a finished cache scores what is there and gives the same bytes as one run."""
    project_dir = write_project(tmp_path / "p", tiny_model_dir, harvest={"shard_size": 8})
    plain = run_harvest(HarvestJob.of(load_project(project_dir)))
    assert plain.scores == {} and not (plain.out / "_scores").exists()
    assert "scores" not in json.loads((plain.out / "manifest.json").read_text())
    write_project(project_dir, tiny_model_dir, harvest={"shard_size": 8, "cross_score": True})
    scored = run_harvest(HarvestJob.of(load_project(project_dir)))
    assert [t.shards_written for t in scored.teachers] == [0, 0]
    assert set(scored.scores) == {"alpha", "beta"}
    assert tree(scored.out) == tree(tiny_cross_reference.out)
    write_project(project_dir, tiny_model_dir, harvest={"shard_size": 8, "cross_score": True,
                                                         "top_k": 4})
    with pytest.raises(PerseaError, match=r"top_k: cache has 16, now 4"):
        run_harvest(HarvestJob.of(load_project(project_dir)))


def test_a_changed_scorer_is_refused(builtin_harvest, tmp_path):
    project_dir, _ = builtin_harvest
    copy = tmp_path / "p"
    shutil.copytree(project_dir, copy)
    out = copy / "cache" / "harvest"
    (out / "_scores" / "qwen3-toy" / "gemma3-toy" / SHARD_PATTERN.format(0)).unlink()
    info = json.loads((out / "qwen3-toy" / "teacher.json").read_text())
    info["fingerprint"] = "0" * 64  # the cache was made by other weights
    (out / "qwen3-toy" / "teacher.json").write_text(json.dumps(info))
    with pytest.raises(PerseaError, match=r"teacher 'qwen3-toy' changed since the harvest"):
        run_harvest(HarvestJob.of(load_project(copy)))
    assert not (out / "_scores" / "qwen3-toy" / "gemma3-toy" / SHARD_PATTERN.format(0)).exists()


def test_a_scorer_is_known_by_its_fingerprints_not_its_vocabulary_count(builtin_harvest,
                                                                          tmp_path):
    """Generation may have run on vLLM, which can count padding rows of the vocabulary
    differently; scoring (on transformers) checks identity by fingerprints only."""
    project_dir, _ = builtin_harvest
    copy = tmp_path / "p"
    shutil.copytree(project_dir, copy)
    out = copy / "cache" / "harvest"
    (out / "_scores" / "qwen3-toy" / "gemma3-toy" / SHARD_PATTERN.format(0)).unlink()
    (out / "manifest.json").unlink()
    record = out / "qwen3-toy" / "teacher.json"
    info = json.loads(record.read_text())
    info["vocab_size"] += 64
    record.write_text(json.dumps(info))
    again = run_harvest(HarvestJob.of(load_project(copy)))
    assert again is not None and json.loads(record.read_text()) == info  # left as it was
    assert (out / "_scores" / "qwen3-toy" / "gemma3-toy" / SHARD_PATTERN.format(0)).exists()


def test_endpoint_teachers_are_scored_but_never_score():
    specs = [TeacherSpec(name="a", builtin="qwen3-toy"),
             TeacherSpec(name="api", endpoint="http://127.0.0.1:1/v1", model="m"),
             TeacherSpec(name="b", path="x")]
    assert cross.pairs(specs) == [("a", "api"), ("a", "b"), ("b", "a"), ("b", "api")]


@pytest.fixture(scope="module")
def tiny_cross_reference(tmp_path_factory, tiny_model_dir):
    """Two teachers (one tiny model), 24 prompts in 3 shards, cross-scored in one run."""
    d = write_project(tmp_path_factory.mktemp("tiny-cross") / "p", tiny_model_dir,
                      harvest={"shard_size": 8, "cross_score": True})
    return run_harvest(HarvestJob.of(load_project(d)))


def test_workers_split_score_shards(tiny_cross_reference, tmp_path, tiny_model_dir):
    """Two workers, each with its share of response and score shards, then a final run:
    the same bytes as one run."""
    cs = {"cross_score": True, "shard_size": 8}
    reference = tiny_cross_reference
    proj = load_project(write_project(tmp_path / "split", tiny_model_dir, harvest=cs))
    out = proj.resolve("cache/harvest")
    assert run_harvest(HarvestJob.of(proj), teachers=["alpha"], worker=(0, 2)) is None
    # alpha's even response shards exist, but beta's do not yet: nothing to score
    assert not (out / "_scores").exists()
    assert run_harvest(HarvestJob.of(proj), teachers=["beta"], worker=(0, 2)) is None
    assert sorted(p.name for p in (out / "_scores" / "beta" / "alpha").iterdir()) == [
        "shard-00000.parquet", "shard-00002.parquet"]
    # odd shards; alpha scores beta's 1
    assert run_harvest(HarvestJob.of(proj), worker=(1, 2)) is None
    assert sorted(p.name for p in (out / "_scores" / "alpha" / "beta").iterdir()) == [
        "shard-00001.parquet"]
    final = run_harvest(HarvestJob.of(proj))
    assert final is not None and tree(final.out) == tree(reference.out)
