"""Exact-match accuracy per toy-world skill, for any model behind the protocol.

A quick in-memory score (used by `persea distill`'s closing table and the benchmarks); the
same items and checks as the toy-world suite of `persea eval`, without writing a record.
"""

from __future__ import annotations

from persea.evaluate.suites import ToyworldSuite


def skill_accuracy(model, split: str = "test", per_skill: int = 50, seed: int = 0,
                   max_new_tokens: int = 32, batch_size: int = 64,
                   skills: list[str] | None = None) -> dict[str, float]:
    """`{skill: accuracy}` plus `overall` (the mean over skills) on `per_skill` items each.

    A skill whose split holds fewer items (kb's test split has 81) is scored on all it has.
    """
    suite = ToyworldSuite(split=split, per_skill=per_skill, seed=seed, skills=skills,
                          max_new_tokens=max_new_tokens)
    items = suite.items()
    right: dict[str, float] = {}
    total: dict[str, int] = {}
    for b in range(0, len(items), batch_size):
        chunk = items[b:b + batch_size]
        outs = model.generate([i.prompt for i in chunk], max_new_tokens)
        for item, out in zip(chunk, outs, strict=True):
            right[item.group] = right.get(item.group, 0.0) + suite.score(
                item, out.text)[f"{suite.name}/{item.group}"]
            total[item.group] = total.get(item.group, 0) + 1
    scores = {skill: right[skill] / total[skill] for skill in total}
    scores["overall"] = sum(scores.values()) / len(scores)
    return scores
