"""Evaluation suites whose items persea generates and scores itself, one item at a time.

A suite lists its items (each with an id, a group such as the skill, a prompt and the
expected answer) and scores one answer into `{metric: value}`. The runner batches the
prompts through any model of the protocol, so a suite never cares what kind of model it
is talking to. Metric names are `<suite>/<name>`: the toy world gives one per skill plus
`toyworld/overall`, the mean over all its items.

lm-evaluation-harness tasks are the other kind of suite (`persea.evaluate.lmeval`): the
harness runs them whole, and its per-sample log becomes the same per-item records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from persea.errors import PerseaError
from persea.skills import TOYWORLD, get_world

TOYWORLD_VERSION = "1"  # bump when the scoring rule changes; item changes show in the digest


@dataclass(frozen=True)
class EvalItem:
    id: str
    group: str
    prompt: str
    target: str


@dataclass
class ToyworldSuite:
    """Every toy-world skill (or `skills`), `per_skill` items of `split` each, exact match.

    A skill whose split holds fewer items (kb's test split has 81) is scored on all it has.
    """

    split: str = "test"
    per_skill: int = 50
    seed: int = 0
    skills: list[str] | None = None
    max_new_tokens: int = 32
    name: str = TOYWORLD
    _items: list[EvalItem] | None = field(default=None, repr=False)

    def items(self) -> list[EvalItem]:
        if self._items is None:
            world = get_world(TOYWORLD)
            unknown = sorted(set(self.skills or []) - set(world.skills))
            if unknown:
                raise PerseaError(f"suite toyworld: unknown skill(s) {', '.join(unknown)}; "
                                  f"expected some of: {', '.join(world.skills)}")
            self._items = [
                EvalItem(it.id, skill, it.prompt, it.answer)
                for skill in (self.skills or list(world.skills))
                for it in world.make_items(skill, self.split, self.per_skill, self.seed,
                                     allow_fewer=True)]
        return self._items

    @property
    def version(self) -> str:
        """The scoring rule's version and a digest of the exact items, so that two runs of
        one version were asked the same questions."""
        digest = hashlib.sha256("\n".join(i.id for i in self.items()).encode()).hexdigest()
        return f"{TOYWORLD_VERSION}+{digest[:12]}"

    @property
    def config(self) -> dict:
        return {"split": self.split, "per_skill": self.per_skill, "seed": self.seed,
                "skills": self.skills, "max_new_tokens": self.max_new_tokens}

    def metrics(self) -> list[str]:
        groups = dict.fromkeys(i.group for i in self.items())
        return [f"{self.name}/{g}" for g in groups] + [f"{self.name}/overall"]

    def score(self, item: EvalItem, output: str) -> dict[str, float]:
        right = float(get_world(TOYWORLD).skills[item.group].check(item.target, output))
        return {f"{self.name}/{item.group}": right, f"{self.name}/overall": right}


def toyworld_metric_names(skills=None) -> list[str]:
    """The metric names the toy-world suite can produce (for checking a policy)."""
    return [f"{TOYWORLD}/{s}" for s in (skills or get_world(TOYWORLD).skills)] + [f"{TOYWORLD}/overall"]


def parse_suite(name: str) -> tuple[str, str | None]:
    """`toyworld` or `lmeval:TASK` -> (kind, task); anything else is a clear error."""
    if name == TOYWORLD:
        return TOYWORLD, None
    kind, sep, task = name.partition(":")
    if kind == "lmeval" and sep and task:
        return "lmeval", task
    raise PerseaError(f"unknown suite {name!r}; expected `toyworld` or `lmeval:TASK` (a task "
                      "of lm-evaluation-harness, e.g. lmeval:my_task with --include-path DIR)")
