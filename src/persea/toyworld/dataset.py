"""Deterministic train / dev / test items for every skill.

Which split an item belongs to is a function of its prompt alone (a SHA-256 of skill and
prompt), so no prompt can ever fall in two splits, whatever the seed or the size asked for.
The seed only chooses which items of a split are drawn and in what order.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass

from persea.toyworld.skills import SKILLS, get_skill

SPLITS = ("train", "dev", "test")
_SPLIT_EDGES = (80, 90)  # percent: train < 80 <= dev < 90 <= test


@dataclass(frozen=True)
class Item:
    id: str
    skill: str
    prompt: str
    answer: str

    def to_dict(self) -> dict:
        return asdict(self)


def split_of(skill: str, prompt: str) -> str:
    digest = hashlib.sha256(f"{skill}\x00{prompt}".encode()).digest()
    bucket = int.from_bytes(digest[:4], "big") % 100
    if bucket < _SPLIT_EDGES[0]:
        return "train"
    return "dev" if bucket < _SPLIT_EDGES[1] else "test"


def make_items(skill: str, split: str, n: int, seed: int = 0,
               allow_fewer: bool = False) -> list[Item]:
    """`n` distinct items of one skill and split; the same arguments give the same list.

    A skill with a finite pool (kb has 720 prompts in all) may hold fewer than `n` in a
    split: that is an error unless `allow_fewer`, which then returns every item found.
    """
    if split not in SPLITS:
        from persea.errors import PerseaError

        raise PerseaError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}")
    sk = get_skill(skill)
    rng = random.Random(f"persea-toyworld-{skill}-{split}-{seed}")
    seen: set[str] = set()
    items: list[Item] = []
    attempts = 0
    while len(items) < n:
        attempts += 1
        if attempts > 200 * n + 10_000:
            if allow_fewer:
                break
            from persea.errors import PerseaError

            raise PerseaError(
                f"skill {skill!r} has fewer than {n} distinct {split} items (found {len(items)})"
            )
        prompt, answer = sk.generate(rng)
        if prompt in seen or split_of(skill, prompt) != split:
            continue
        seen.add(prompt)
        item_id = hashlib.sha256(f"{skill}\x00{prompt}".encode()).hexdigest()[:16]
        items.append(Item(item_id, skill, prompt, answer))
    return items


def make_mixture(split: str, per_skill: int, seed: int = 0,
                 skills: list[str] | None = None, allow_fewer: bool = False) -> list[Item]:
    """`per_skill` items of each skill (or all a finite skill has, if `allow_fewer`),
    interleaved in a seeded order."""
    out: list[Item] = []
    for name in skills or list(SKILLS):
        out.extend(make_items(name, split, per_skill, seed, allow_fewer))
    random.Random(f"persea-mixture-{split}-{seed}").shuffle(out)
    return out
