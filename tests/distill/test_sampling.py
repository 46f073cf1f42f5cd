"""Batch composition: the default epoch permutation and the skill mix."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from persea.distill.sampling import SkillMix, batch_indices
from persea.errors import PerseaError

SKILLS = ["a"] * 90 + ["b"] * 9 + ["c"] * 1 + [None] * 5
WEIGHTS = np.array([1.0] * 100 + [1.0] * 5)
WEIGHTS[95] = 0.0  # one dropped example of skill "a"


def _drawn(mix, steps=400, size=16):
    return np.concatenate([mix.batch(s, 0, size, seed=3) for s in range(steps)])


def test_equal_mix_gives_each_skill_its_share_whatever_its_size():
    mix = SkillMix(SKILLS, WEIGHTS, "equal")
    drawn = _drawn(mix)
    counts = Counter(SKILLS[i] or "" for i in drawn)
    assert set(counts) == {"a", "b", "c", ""}
    for skill in counts:
        assert counts[skill] / len(drawn) == pytest.approx(0.25, abs=0.04)
    assert 95 not in drawn  # weight 0 is never drawn
    assert np.array_equal(mix.batch(7, 0, 16, 3), mix.batch(7, 0, 16, 3))  # pure in step


def test_mapping_mix_follows_the_shares_and_skips_absent_skills():
    mix = SkillMix(SKILLS, WEIGHTS, {"a": 1, "b": 3})
    counts = Counter(SKILLS[i] for i in _drawn(mix))
    assert set(counts) == {"a", "b"}
    assert counts["b"] / (counts["a"] + counts["b"]) == pytest.approx(0.75, abs=0.04)


def test_mix_naming_a_skill_without_examples_is_refused():
    with pytest.raises(PerseaError, match=r"skill_mix names zz, which no kept example has"):
        SkillMix(SKILLS, WEIGHTS, {"a": 1, "zz": 1})
    with pytest.raises(PerseaError, match="share of 0"):
        SkillMix(SKILLS, WEIGHTS, {"a": 0})


def test_default_batches_walk_epoch_permutations():
    pool = np.arange(10)
    first_epoch = np.concatenate([batch_indices(pool, s, 0, 5, 1, seed=1) for s in range(2)])
    assert sorted(first_epoch.tolist()) == list(range(10))
