"""Which examples make up each training batch.

The batches of step `s` are a pure function of (seed, s), so a resumed run trains on exactly
what an uninterrupted one would have.

- `examples` (the default): consecutive slices of seeded per-epoch permutations of every
  example with a positive weight, so each skill gets the share of batches that it has of
  the kept examples.
- `equal`, or a mapping `{skill: share}`: each batch row first draws a skill with those
  shares, then an example of that skill uniformly, with replacement, from a generator seeded
  with (seed, step, micro-batch). A skill with few kept examples (count, where only one
  weak teacher answers correctly) then still gets its share of the steps, and a hard skill
  can be given more. Skills absent from the mapping are not drawn; examples without a skill
  form a group of their own (`""`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from persea.errors import PerseaError


def batch_indices(pool: np.ndarray, step: int, micro: int, size: int, accum: int, seed: int
                  ) -> np.ndarray:
    """The examples of micro-batch `micro` of step `step`: consecutive slices of seeded
    per-epoch permutations of `pool`, so any step can be recomputed from its number."""
    start = (step * accum + micro) * size
    epoch, offset = divmod(start, len(pool))
    out = []
    while len(out) < size:
        perm = np.random.default_rng([seed, epoch]).permutation(pool)
        take = perm[offset:offset + size - len(out)]
        out.extend(take.tolist())
        epoch, offset = epoch + 1, 0
    return np.asarray(out, np.int64)


class SkillMix:
    """Draws batch rows skill by skill with the given shares (see the module docstring)."""

    def __init__(self, skills: list[str | None], weights: np.ndarray,
                 mix: str | Mapping[str, float]):
        groups: dict[str, list[int]] = {}
        for i, (skill, w) in enumerate(zip(skills, weights)):
            if w > 0:
                groups.setdefault(skill or "", []).append(i)
        shares = {g: 1.0 for g in groups} if mix == "equal" else dict(mix)
        unknown = sorted(set(shares) - set(groups))
        if unknown:
            raise PerseaError(f"distill.skill_mix names {', '.join(unknown)}, which no kept "
                              f"example has (kept skills: {', '.join(sorted(groups))})")
        self.names = sorted(g for g in shares if shares[g] > 0)
        if not self.names:
            raise PerseaError("distill.skill_mix gives every skill a share of 0")
        p = np.array([float(shares[g]) for g in self.names])
        self.p = p / p.sum()
        self.groups = [np.asarray(groups[g], np.int64) for g in self.names]

    def batch(self, step: int, micro: int, size: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, step, micro])
        which = rng.choice(len(self.names), size=size, p=self.p)
        return np.array([self.groups[g][rng.integers(len(self.groups[g]))] for g in which],
                        np.int64)
