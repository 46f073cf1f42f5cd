"""Skills: tasks whose answers a checker verifies exactly, grouped in named worlds.

A world (the toy world is the one persea ships) registers itself here through the
`persea.plugins` entry point group (see `persea.plugins`); harvest, distill and evaluate look
it up by name and never import it. `skill_accuracy` is the quick in-memory score that
`persea distill` (its closing table and `best_teacher` weighting), the harvest's skill routing
and the benchmarks use: the same items and checks as the suite of `persea eval`, without
writing a record. `skill_table` is it for several models at once, as `{skill: {model: acc}}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Protocol

from persea.errors import PerseaError
from persea.plugins import load_plugins

TOYWORLD = "toyworld"  # the world that prompts, suites and metrics name by default


class Skill(Protocol):
    name: str
    description: str

    def check(self, answer: str, predicted: str) -> bool: ...


class Item(Protocol):
    id: str
    skill: str
    prompt: str
    answer: str


@dataclass(frozen=True)
class World:
    """A world's skills, and its item makers: `make_items(skill, split, n, seed, allow_fewer)`
    and `make_mixture(split, per_skill, seed, skills, allow_fewer)`, both deterministic."""

    name: str
    skills: Mapping[str, Skill]
    make_items: Callable[..., list[Item]]
    make_mixture: Callable[..., list[Item]]


_WORLDS: dict[str, World] = {}


def register_world(world: World) -> None:
    _WORLDS[world.name] = world


def get_world(name: str = TOYWORLD) -> World:
    load_plugins()
    try:
        return _WORLDS[name]
    except KeyError:
        raise PerseaError(f"no skill world {name!r} is installed (installed: "
                          f"{', '.join(_WORLDS) or 'none'}); reinstall persea") from None


def skill_accuracy(model, split: str = "test", per_skill: int = 50, seed: int = 0,
                   max_new_tokens: int = 32, batch_size: int = 64,
                   skills: list[str] | None = None, world: str = TOYWORLD) -> dict[str, float]:
    """`{skill: accuracy}` plus `overall` (the mean over skills) on `per_skill` items each.

    A skill whose split holds fewer items (kb's test split has 81) is scored on all it has.
    """
    w = get_world(world)
    unknown = sorted(set(skills or []) - set(w.skills))
    if unknown:
        raise PerseaError(f"suite {w.name}: unknown skill(s) {', '.join(unknown)}; "
                          f"expected some of: {', '.join(w.skills)}")
    items = [it for skill in (skills or list(w.skills))
             for it in w.make_items(skill, split, per_skill, seed, allow_fewer=True)]
    right: dict[str, float] = {}
    total: dict[str, int] = {}
    for b in range(0, len(items), batch_size):
        chunk = items[b:b + batch_size]
        outs = model.generate([i.prompt for i in chunk], max_new_tokens)
        for item, out in zip(chunk, outs, strict=True):
            ok = float(w.skills[item.skill].check(item.answer, out.text))
            right[item.skill] = right.get(item.skill, 0.0) + ok
            total[item.skill] = total.get(item.skill, 0) + 1
    scores = {skill: right[skill] / total[skill] for skill in total}
    scores["overall"] = sum(scores.values()) / len(scores)
    return scores


def skill_table(names: Iterable[str], load: Callable[[str], object], split: str = "dev",
                per_skill: int = 50, seed: int = 0, **options) -> dict[str, dict[str, float]]:
    """`{skill: {name: accuracy}}` of every named model (`skill_accuracy` on `per_skill`
    items of each skill of `split`), loading one model at a time with `load(name)` and
    dropping it before the next. Distill's `best_teacher` weighting and the harvest's routing
    both read teachers' dev accuracy in this shape."""
    w = get_world(options.get("world", TOYWORLD))
    table: dict[str, dict[str, float]] = {s: {} for s in options.get("skills") or w.skills}
    for name in names:
        acc = skill_accuracy(load(name), split=split, per_skill=per_skill, seed=seed, **options)
        for skill in table:
            table[skill][name] = acc[skill]
    return table
