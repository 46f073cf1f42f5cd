"""The toy-world prompt set of a harvest: one count for every skill, or a count per skill."""

import pytest

from persea.errors import PerseaError
from persea.harvest.prompts import from_toyworld
from persea.project import parse_project


def _counts(records):
    out: dict[str, int] = {}
    for r in records:
        out[r.skill] = out.get(r.skill, 0) + 1
    return out


def test_per_skill_mapping_gives_each_skill_its_count_and_leaves_others_out():
    records = from_toyworld("train", {"addition": 30, "sort": 5, "kb": 0}, seed=0)
    assert _counts(records) == {"addition": 30, "sort": 5}
    assert len({r.prompt for r in records}) == 35
    # interleaved, not one skill after the other
    assert {r.skill for r in records[:10]} == {"addition", "sort"} or \
        records[:5] != sorted(records[:5], key=lambda r: r.skill)
    assert records == from_toyworld("train", {"addition": 30, "sort": 5, "kb": 0}, seed=0)


def test_per_skill_mapping_takes_the_same_items_as_one_count_for_that_skill():
    one = from_toyworld("train", 12, seed=3, skills=["reverse"])
    mapped = from_toyworld("train", {"reverse": 12}, seed=3)
    assert {r.prompt for r in one} == {r.prompt for r in mapped}


def test_unknown_skill_in_mapping_is_one_clear_error():
    with pytest.raises(PerseaError, match="unknown skill.*nope"):
        from_toyworld("train", {"nope": 3}, seed=0)


@pytest.mark.parametrize("prompts, message", [
    ({"toyworld": {"per_skill": {"addition": 0}}}, "every skill 0"),
    ({"toyworld": {"per_skill": {"addition": 3}, "skills": ["addition"]}}, "not both"),
    ({"toyworld": {"per_skill": {"addition": -1}}}, "per_skill.addition is -1"),
    ({"toyworld": {"per_skill": 0}}, "per_skill is 0"),
])
def test_bad_per_skill_mapping_is_refused_by_the_project_file(prompts, message):
    with pytest.raises(Exception, match=message):
        parse_project({"name": "p", "teachers": [{"name": "q", "builtin": "qwen3-toy"}],
                       "prompts": prompts})
