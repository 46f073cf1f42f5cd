"""On-policy distillation: alignment of a scored student answer, the step schedule, the
fallback for teachers that cannot score, and an end-to-end run that resumes exactly."""

from __future__ import annotations

import csv
import shutil
import types

import numpy as np
import pytest
import yaml

from persea.distill.onpolicy import aligned_signal, is_on_policy_step, make_scorers, \
    sampled_signal
from persea.distill.run import run_distill
from persea.models.protocol import Trace
from persea.project import load_project


def test_aligned_signal_folds_unmatched_candidates_into_the_tail():
    # teacher tokens "ab" + "c" over text "abc"; student tokens "a", "b", "c"
    trace = Trace(text="abc", token_ids=[5, 6], spans=[(0, 2), (2, 3)],
                  logprobs=[np.log(0.5), np.log(0.8)],
                  topk_ids=np.array([[5, 7], [6, 8]]),
                  topk_logprobs=np.log(np.array([[0.5, 0.3], [0.8, 0.1]])))
    mapping = np.array([-1, -1, -1, -1, -1, 10, 11, -1, 12])  # teacher id 7 has no student id
    sig = aligned_signal("t", trace, [(0, 1), (1, 2), (2, 3)], mapping)
    assert sig.pos.tolist() == [0, 2]  # boundaries shared at 0 and 2 only
    assert sig.ids[0].tolist() == [10, -1] and sig.ids[1].tolist() == [11, 12]
    assert np.isneginf(sig.logp[0, 1])
    # row 0: 0.2 outside the top-2 plus the unmatched 0.3; row 1: 0.1 outside
    assert sig.tail == pytest.approx([0.5, 0.1], abs=1e-6)
    assert sig.conf == pytest.approx([0.5, 0.8], abs=1e-6)


def test_aligned_signal_takes_a_context_bound_id_only_where_the_student_wrote_it():
    # text " gofe go": teacher " go" + "fe" + " go"; student " gofe" + " go", where the
    # student's " go" (id 21) is a whole word, bound to what follows it
    trace = Trace(text=" gofe go", token_ids=[5, 6, 5], spans=[(0, 3), (3, 5), (5, 8)],
                  logprobs=np.log([0.7, 0.9, 0.6]),
                  topk_ids=np.array([[5, 7], [6, 7], [5, 7]]),
                  topk_logprobs=np.log(np.array([[0.7, 0.2], [0.9, 0.05], [0.6, 0.3]])))
    mapping = np.array([-1, -1, -1, -1, -1, 21, -1, 22])  # " go" -> 21, "." -> 22
    bound = np.zeros(30, bool)
    bound[[20, 21]] = True  # " gofe" and " go"
    spans, ids = [(0, 5), (5, 8)], [20, 21]
    sig = aligned_signal("t", trace, spans, mapping, ids, bound)
    assert sig.pos.tolist() == [0, 1]
    # at " gofe" the teacher's " go" is not the student's word: its 0.7 joins the tail
    assert sig.ids[0].tolist() == [-1, 22] and np.isneginf(sig.logp[0, 0])
    assert sig.tail[0] == pytest.approx(0.1 + 0.7, abs=1e-6)
    # at the standalone " go" it is
    assert sig.ids[1].tolist() == [21, 22]
    assert sig.tail[1] == pytest.approx(0.1, abs=1e-6)
    # without the student's tokens the carry is the plain one
    plain = aligned_signal("t", trace, spans, mapping)
    assert plain.ids[0].tolist() == [21, 22] and plain.tail[0] == pytest.approx(0.1, abs=1e-6)


def test_on_policy_steps_are_a_seeded_share():
    picks = [is_on_policy_step(s, 0.3, seed=4) for s in range(2000)]
    assert picks == [is_on_policy_step(s, 0.3, seed=4) for s in range(2000)]
    assert 0.25 < np.mean(picks) < 0.35
    assert not any(is_on_policy_step(s, 0.0, 4) for s in range(50))
    assert all(is_on_policy_step(s, 1.0, 4) for s in range(50))
    assert [is_on_policy_step(s, 1.0, 4, first=3) for s in range(5)] == [False] * 3 + [True] * 2


def test_teachers_without_a_tokenizer_are_named_not_scored(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    white = types.SimpleNamespace(tokenizer=tok)
    black = types.SimpleNamespace(name="api")  # an endpoint: no tokenizer, no scores
    scorers, skipped = make_scorers({"alpha": white, "api": black}, tok)
    assert [s.name for s in scorers] == ["alpha"] and skipped == ["api"]
    assert scorers[0].mapping[tok.eos_token_id] == tok.eos_token_id


def _with_on_policy(project_dir, **on_policy):
    data = yaml.safe_load((project_dir / "persea.yaml").read_text())
    data["distill"]["on_policy"] = {"lmbda": 0.5, "max_new_tokens": 6, "top_k": 8,
                                    **on_policy}
    (project_dir / "persea.yaml").write_text(yaml.safe_dump(data))
    return project_dir


def _rows(run_dir):
    with open(run_dir / "loss.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_on_policy_run_mixes_steps_and_resumes_to_the_same_weights(project_copy, tmp_path):
    from persea.models.fingerprint import sha256_file

    _with_on_policy(project_copy, prompts_per_skill=4)
    other = tmp_path / "again"
    shutil.copytree(project_copy, other)
    result = run_distill(load_project(project_copy))
    rows = _rows(result.run_dir)
    flags = [int(r["on_policy"]) for r in rows]
    assert flags == [int(is_on_policy_step(s, 0.5, 0)) for s in range(10)]
    assert 0 < sum(flags) < 10
    assert all(np.isfinite(float(r["kd"])) for r in rows if r["on_policy"] == "1")
    assert all(r["ce"] == "nan" for r in rows if r["on_policy"] == "1")  # no CE on samples

    # stop after the first checkpoint, then resume: the same weights as one straight run
    first = run_distill(load_project(other))
    for ckpt in sorted((first.run_dir / "checkpoints").iterdir())[1:]:
        shutil.rmtree(ckpt)
    shutil.rmtree(first.student_dir)
    again = run_distill(load_project(other))
    assert again.summary["resumed_from"] == 8
    assert sha256_file(again.student_dir / "model.safetensors") == \
        sha256_file(result.student_dir / "model.safetensors")


def test_sampled_signal_is_the_teachers_probability_of_the_students_token_text():
    # text "abcd": teacher tokens "a" "bc" "d" + end; student tokens "ab" "cd" + end and "a"
    trace = Trace(text="abcd", token_ids=[1, 2, 3, 9], spans=[(0, 1), (1, 3), (3, 4), (4, 4)],
                  logprobs=[np.log(0.9), np.log(0.5), np.log(0.8), np.log(0.7)])
    sig = sampled_signal("t", trace, [(0, 1), (1, 3), (3, 4), (4, 4)], [11, 12, 13, 0])
    assert sig.pos.tolist() == [0, 1, 2, 3]
    assert np.exp(sig.logp[:, 0]) == pytest.approx([0.9, 0.5, 0.8, 0.7], rel=1e-5)
    assert sig.ids[:, 0].tolist() == [11, 12, 13, 0]
    assert sig.tail == pytest.approx([0.1, 0.5, 0.2, 0.3], abs=1e-6)
    # "ab" ends inside the teacher's "bc": no target there; "abcd" is a whole chain
    sig = sampled_signal("t", trace, [(0, 2), (2, 4), (4, 4)], [21, 22, 0])
    assert sig.pos.tolist() == [2]
    sig = sampled_signal("t", trace, [(0, 4)], [30])
    assert np.exp(sig.logp[0, 0]) == pytest.approx(0.9 * 0.5 * 0.8, rel=1e-5)


def test_under_a_time_budget_on_policy_starts_at_its_share_of_the_budget(project_copy,
                                                                       monkeypatch):
    """`start: 0.5` with a 12-second budget and a step cap of 60: on-policy steps begin once
    6 seconds are spent, long before step 30 (half the cap) would allow. The trainer's clock
    is replaced by one that moves half a second per reading, so a step costs about 1 s."""
    from persea.distill import trainer

    now = [0.0]

    def tick() -> float:
        now[0] += 0.5
        return now[0]

    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=tick))
    _with_on_policy(project_copy, lmbda=1.0, start=0.5, prompts_per_skill=4)
    data = yaml.safe_load((project_copy / "persea.yaml").read_text())
    data["distill"].update(steps=60, time_budget=12)
    (project_copy / "persea.yaml").write_text(yaml.safe_dump(data))
    result = run_distill(load_project(project_copy))
    flags = [int(r["on_policy"]) for r in _rows(result.run_dir)]
    assert len(flags) < 30 and result.summary["steps"] == len(flags)  # the budget ended it
    assert result.summary["seconds"] >= 12
    first_on = flags.index(1)
    assert flags == [0] * first_on + [1] * (len(flags) - first_on)  # lmbda 1 after start
    assert 3 <= first_on <= len(flags) - 3  # about half-way through the budget
