"""Exact-match accuracy per toy-world skill, for any model behind the protocol."""

from __future__ import annotations

from persea.toyworld import SKILLS, make_items


def skill_accuracy(model, split: str = "test", per_skill: int = 50, seed: int = 0,
                   max_new_tokens: int = 32, batch_size: int = 64,
                   skills: list[str] | None = None) -> dict[str, float]:
    """`{skill: accuracy}` plus `overall` (the mean over skills) on `per_skill` items each.

    A skill whose split holds fewer items (kb's test split has 81) is scored on all it has.
    """
    scores: dict[str, float] = {}
    for skill in skills or list(SKILLS):
        items = make_items(skill, split, per_skill, seed, allow_fewer=True)
        right = 0
        for b in range(0, len(items), batch_size):
            chunk = items[b:b + batch_size]
            outs = model.generate([i.prompt for i in chunk], max_new_tokens)
            right += sum(SKILLS[skill].check(i.answer, o.text) for i, o in zip(chunk, outs))
        scores[skill] = right / len(items)
    scores["overall"] = sum(scores.values()) / len(scores)
    return scores
