"""What each teacher transferred to the student: a pure summary of the built examples.

Per teacher, over its (prompt, response) examples:

- weighted in (weight > 0) and dropped, each drop with its reason from the weighting
  (`persea.distill.weighting.drop_reasons`); weighted in but below `FAINT` counts too;
- of the response positions of its weighted-in examples, those with a logit-KD target;
- at those positions, the mean teacher top-k probability carried onto student ids, and the
  mean mass left to the unmatched term (candidates with no student id, plus the tail).

With `loss.combine: average/select` an example's target mixes several teachers; it is
counted for the example's author. A teacher with no example weighted in, or no position
with a target, "contributes nothing", and `nothing_warning` says why in one line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np

FAINT = 0.01  # a weight below this keeps an example in, but it hardly counts


@dataclass
class TeacherTransfer:
    teacher: str
    examples: int
    weighted_in: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> examples
    faint: int = 0  # weighted in with weight < FAINT
    response_positions: int = 0  # of weighted-in examples
    target_positions: int = 0  # of those, positions with a logit-KD target
    carried_mass: float = 0.0  # mean over target positions
    unmatched_mass: float = 0.0  # mean over target positions: unmatched candidates + tail

    @property
    def target_share(self) -> float:
        return self.target_positions / self.response_positions if self.response_positions else 0.0

    def as_json(self) -> dict:
        return {**asdict(self), "target_share": round(self.target_share, 6)}


def transfer_stats(examples, weights: np.ndarray, reasons: list[str | None],
                   teachers: list[str]) -> list[TeacherTransfer]:
    """One `TeacherTransfer` per teacher, in the order given (teachers without an example
    included, with zeros)."""
    out = {t: TeacherTransfer(t, 0, 0) for t in teachers}
    sums: dict[str, list[float]] = {t: [0.0, 0.0] for t in teachers}
    for e, w, why in zip(examples, weights, reasons, strict=True):
        s = out.setdefault(e.teacher, TeacherTransfer(e.teacher, 0, 0))
        acc = sums.setdefault(e.teacher, [0.0, 0.0])
        s.examples += 1
        if not w > 0:
            key = why or "zero weight"
            s.dropped[key] = s.dropped.get(key, 0) + 1
            continue
        s.weighted_in += 1
        s.faint += int(w < FAINT)
        s.response_positions += e.n_response
        s.target_positions += len(e.kd_pos)
        if len(e.kd_pos):
            p = np.exp(e.kd_logp.astype(np.float64))  # absent entries are -inf: 0
            matched = e.kd_ids >= 0
            acc[0] += float(np.where(matched, p, 0).sum())
            acc[1] += float(np.where(matched, 0, p).sum() + e.kd_tail.astype(np.float64).sum())
    for t, s in out.items():
        if s.target_positions:
            s.carried_mass = sums[t][0] / s.target_positions
            s.unmatched_mass = sums[t][1] / s.target_positions
        s.dropped = dict(sorted(s.dropped.items(), key=lambda kv: (-kv[1], kv[0])))
    return list(out.values())


def dropped_text(s: TeacherTransfer) -> str:
    """`verified: checker rejected 412; best_teacher: not best on skill kb 30`."""
    parts = [f"{why} {n}" for why, n in s.dropped.items()]
    if s.faint:
        parts.append(f"kept but weight < {FAINT:g} {s.faint}")
    return "; ".join(parts) or "-"


def nothing_warning(s: TeacherTransfer, policies: list[str], uses_kd: bool) -> str | None:
    """One line naming a teacher that contributes nothing and why, or None."""
    head = f"teacher {s.teacher!r} contributes nothing: "
    if s.examples == 0:
        return head + "it has no responses in the harvest"
    if s.weighted_in == 0:
        reasons = Counter({why.split(":")[0]: n for why, n in s.dropped.items()})
        main = reasons.most_common(1)[0][0]
        if main == "verified":
            why = (f"the checker rejected all {s.examples} of its answers (weighting: "
                   f"{', '.join(policies)}); try weighting: [confidence] or check its chat "
                   "template")
        elif main == "best_teacher":
            why = (f"on the dev split it is not the best teacher on the skill of any of its "
                   f"{s.examples} answers (weighting: {', '.join(policies)}); try weighting: "
                   "[verified]")
        else:
            why = (f"all {s.examples} of its answers got weight 0 ({dropped_text(s)}); try "
                   "weighting: [uniform]")
        return head + why
    if uses_kd and s.target_positions == 0:
        return (head + f"none of the {s.response_positions} response positions of its "
                f"{s.weighted_in} weighted-in answers got a logit target (no shared character "
                "boundary with the student's tokens, or no stored top-k); use kd: none with "
                "alm_weight, or check its tokenizer")
    return None
