"""The toy world is deterministic, its splits never share an item, and every answer checks."""

from __future__ import annotations

import pytest

from persea.errors import PerseaError
from persea.toyworld import SKILLS, SPLITS, get_skill, make_items, make_mixture, split_of
from persea.toyworld.kb import build_kb


def test_at_least_five_skills_of_different_kinds():
    assert len(SKILLS) >= 5
    assert {"addition", "reverse", "sort", "kb", "count"} <= set(SKILLS)


@pytest.mark.parametrize("skill", list(SKILLS))
def test_same_seed_same_items_other_seed_other_items(skill):
    a = make_items(skill, "train", 40, seed=1)
    b = make_items(skill, "train", 40, seed=1)
    c = make_items(skill, "train", 40, seed=2)
    assert a == b
    assert [i.prompt for i in a] != [i.prompt for i in c]


@pytest.mark.parametrize("skill", list(SKILLS))
def test_splits_are_disjoint_and_items_distinct(skill):
    by_split = {s: make_items(skill, s, 60 if s == "train" else 25, seed=0) for s in SPLITS}
    prompts = {s: {i.prompt for i in items} for s, items in by_split.items()}
    for s, items in by_split.items():
        assert len(prompts[s]) == len(items)  # no repeats inside a split
        assert all(split_of(skill, i.prompt) == s for i in items)
    assert not prompts["train"] & prompts["dev"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["dev"] & prompts["test"]


@pytest.mark.parametrize("skill", list(SKILLS))
def test_answers_are_right_and_checker_is_exact(skill):
    sk = get_skill(skill)
    for item in make_items(skill, "dev", 20):
        assert sk.check(item.answer, item.answer)
        assert sk.check(item.answer, f"  {item.answer}\n")
        assert not sk.check(item.answer, item.answer + "x")
        assert not sk.check(item.answer, "")


def test_answers_by_hand():
    add = make_items("addition", "test", 5)
    for it in add:
        a, b = it.prompt.removeprefix("What is ").removesuffix("?").split(" + ")
        assert int(it.answer) == int(a) + int(b)
    for it in make_items("reverse", "test", 5):
        assert it.answer == it.prompt.split(": ")[1][::-1]
    for it in make_items("sort", "test", 5):
        assert it.answer.split(", ") == sorted(it.prompt.split(": ")[1].split(", "))
    for it in make_items("count", "test", 5):
        letter, text = it.prompt.split("'")[1], it.prompt.split("'")[3]
        assert int(it.answer) == text.count(letter)


def test_knowledge_base_has_200_distinct_facts_and_kb_items_use_them():
    kb = build_kb()
    assert len(kb) >= 200
    assert len({(f.country, f.relation) for f in kb}) == len(kb)
    values = {(f.country, f.value) for f in kb}
    for it in make_items("kb", "test", 20):
        country = next(f.country for f in kb if f.country in it.prompt)
        assert (country, it.answer) in values


def test_mixture_is_deterministic_and_balanced():
    m1 = make_mixture("train", 7, seed=3)
    assert m1 == make_mixture("train", 7, seed=3)
    assert len(m1) == 7 * len(SKILLS)
    assert {i.skill for i in m1} == set(SKILLS)


def test_unknown_skill_and_split_are_clear_errors():
    with pytest.raises(PerseaError, match="unknown skill 'nope'"):
        make_items("nope", "train", 1)
    with pytest.raises(PerseaError, match="unknown split 'val'"):
        make_items("addition", "val", 1)


def test_finite_pool_is_an_error_unless_fewer_are_allowed():
    from persea.errors import PerseaError

    with pytest.raises(PerseaError, match="fewer than 500 distinct test items"):
        make_items("kb", "test", 500)
    every = make_items("kb", "test", 500, allow_fewer=True)
    assert 50 < len(every) < 500
    assert len({i.prompt for i in every}) == len(every)
    assert make_items("kb", "test", len(every)) == every


def test_harvest_prompts_take_all_of_a_finite_skill():
    from persea.harvest.prompts import from_toyworld

    recs = from_toyworld("train", 600, 0, ["kb", "addition"])
    by_skill = {s: sum(r.skill == s for r in recs) for s in ("kb", "addition")}
    assert by_skill["addition"] == 600
    assert by_skill["kb"] == len(make_items("kb", "train", 600, allow_fewer=True)) < 600
