"""Multi-teacher weights, by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from persea.distill.weighting import example_weights
from persea.errors import PerseaError


def ex(prompt, teacher, skill, correct, conf):
    return SimpleNamespace(prompt_index=prompt, teacher=teacher, skill=skill, correct=correct,
                           mean_logprob=conf)


EXAMPLES = [
    ex(0, "a", "addition", True, -0.1), ex(0, "b", "addition", False, -2.0),
    ex(1, "a", "kb", False, -1.0), ex(1, "b", "kb", True, -1.0),
    ex(2, "a", "freeform", None, -0.5),  # no checker: falls back to uniform
]


def test_uniform_and_verified():
    assert example_weights(EXAMPLES, ["uniform"]).tolist() == [1, 1, 1, 1, 1]
    assert example_weights(EXAMPLES, ["verified"]).tolist() == [1, 0, 0, 1, 1]


def test_confidence_is_a_softmax_per_prompt():
    w = example_weights(EXAMPLES, ["confidence"], tau=1.0)
    # prompt 0: softmax(-0.1, -2.0) * 2
    e = math.exp(-0.1) / (math.exp(-0.1) + math.exp(-2.0)) * 2
    assert w[0] == pytest.approx(e) and w[1] == pytest.approx(2 - e)
    assert w[2] == pytest.approx(1.0) and w[3] == pytest.approx(1.0)  # a tie
    assert w[4] == pytest.approx(1.0)  # alone on its prompt


def test_best_teacher_from_dev_scores_with_fallback():
    dev = {"addition": {"a": 0.9, "b": 0.4}, "kb": {"a": 0.5, "b": 0.5}}
    w = example_weights(EXAMPLES, ["best_teacher"], dev_scores=dev)
    assert w.tolist() == [1, 0, 1, 1, 1]  # kb is a tie; freeform has no score: uniform


def test_policies_multiply_and_skills_can_have_their_own():
    w = example_weights(EXAMPLES, ["verified"], by_skill={"kb": ["uniform"]})
    assert w.tolist() == [1, 0, 1, 1, 1]
    w2 = example_weights(EXAMPLES, ["verified", "confidence"])
    assert w2[1] == 0 and w2[0] == pytest.approx(example_weights(EXAMPLES, ["confidence"])[0])


def test_unknown_policy():
    with pytest.raises(PerseaError, match="unknown weighting policy 'loudest'"):
        example_weights(EXAMPLES, ["loudest"])
