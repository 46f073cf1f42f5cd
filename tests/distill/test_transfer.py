"""What each teacher transferred, from hand-made examples."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from persea.distill.transfer import dropped_text, nothing_warning, transfer_stats
from persea.distill.weighting import drop_reasons

def ex(teacher, n_response, pos, ids, probs, tail, skill="kb", correct=True, prompt=0):
    k = len(ids[0]) if ids else 1
    with np.errstate(divide="ignore"):  # probability 0: an absent entry, log-prob -inf
        logp = np.log(np.array(probs, np.float32)).reshape(len(pos), k)
    return SimpleNamespace(
        teacher=teacher, n_response=n_response, skill=skill, correct=correct,
        prompt_index=prompt, mean_logprob=-1.0, kd_pos=np.array(pos, np.int64),
        kd_ids=np.array(ids, np.int64).reshape(len(pos), k), kd_logp=logp,
        kd_tail=np.array(tail, np.float32))


def test_counts_positions_and_masses_per_teacher():
    examples = [
        # a: two positions of four; first carries 0.5 + 0.25, 0.2 unmatched, tail 0.05
        ex("a", 4, [0, 2], [[3, 7, -1], [5, -1, -1]], [[0.5, 0.25, 0.2], [0.9, 0.0, 0.0]],
           [0.05, 0.1]),
        # a, dropped: its positions count nowhere
        ex("a", 5, [0], [[1, 2, 3]], [[0.3, 0.3, 0.3]], [0.1], correct=False),
        # b: weighted in, no position with a target
        ex("b", 3, [], [], [], []),
    ]
    weights = np.array([1.0, 0.0, 0.005])
    reasons = [None, "verified: checker rejected", None]
    a, b, c = transfer_stats(examples, weights, reasons, ["a", "b", "c"])
    assert (a.examples, a.weighted_in, a.dropped) == (2, 1, {"verified: checker rejected": 1})
    assert (a.response_positions, a.target_positions) == (4, 2) and a.target_share == 0.5
    assert a.carried_mass == pytest.approx((0.75 + 0.9) / 2)
    assert a.unmatched_mass == pytest.approx((0.25 + 0.1) / 2)  # -inf entries add nothing
    assert (b.weighted_in, b.faint, b.target_positions, b.response_positions) == (1, 1, 0, 3)
    assert b.carried_mass == 0 and c.examples == 0
    assert dropped_text(a) == "verified: checker rejected 1"
    assert dropped_text(b) == "kept but weight < 0.01 1"
    json = a.as_json()
    assert json["target_share"] == 0.5 and json["dropped"] == {"verified: checker rejected": 1}


def test_a_teacher_that_contributes_nothing_is_named_with_its_reason():
    rejected = [ex("gemma", 2, [0], [[1]], [[1.0]], [0.0], correct=False) for _ in range(36)]
    reasons = drop_reasons(rejected, ["verified"])
    [g] = transfer_stats(rejected, np.zeros(36), reasons, ["gemma"])
    msg = nothing_warning(g, ["verified"], uses_kd=True)
    assert msg == ("teacher 'gemma' contributes nothing: the checker rejected all 36 of its "
                   "answers (weighting: verified); try weighting: [confidence] or check its "
                   "chat template")
    no_target = transfer_stats([ex("t", 3, [], [], [], [])], np.ones(1), [None], ["t"])[0]
    assert "none of the 3 response positions" in nothing_warning(no_target, ["uniform"], True)
    assert nothing_warning(no_target, ["uniform"], uses_kd=False) is None  # CE still learns
    ok = transfer_stats([ex("t", 2, [0], [[1]], [[1.0]], [0.0])], np.ones(1), [None], ["t"])
    assert nothing_warning(ok[0], ["uniform"], True) is None


def test_drop_reasons_name_the_policy_that_zeroed_the_weight():
    examples = [ex("a", 1, [], [], [], [], skill="kb", correct=False, prompt=0),
                ex("b", 1, [], [], [], [], skill="kb", correct=True, prompt=0),
                ex("b", 1, [], [], [], [], skill="addition", correct=True, prompt=1),
                ex("a", 1, [], [], [], [], skill="addition", correct=True, prompt=1)]
    dev = {"kb": {"a": 0.9, "b": 0.1}, "addition": {"a": 0.2, "b": 0.8}}
    assert drop_reasons(examples, ["verified", "best_teacher"], dev_scores=dev) == [
        "verified: checker rejected", "best_teacher: not best on skill kb", None,
        "best_teacher: not best on skill addition"]
    assert drop_reasons(examples, ["uniform"]) == [None] * 4
    examples[1].mean_logprob = -math.inf  # softmax gives it 0
    assert drop_reasons(examples, ["confidence"])[1] == "confidence: weight underflowed to 0"
