"""Multi-teacher weighting: how much each (prompt, teacher) example counts.

Policies, each a function of the examples (and, for `best_teacher`, of dev-split scores):

- `uniform`: every response counts 1.
- `confidence`: for each prompt, a softmax over its teachers of their mean chosen-token
  log-probability divided by `tau`, times the number of teachers (so the weights of a prompt
  still add up to its number of responses). Per token instead: `token_confidence=True` in
  the trainer scales each position's logit loss by the teacher's probability of its token.
- `verified`: 1 if the skill's checker accepts the response, 0 if it rejects it.
- `best_teacher`: 1 for the teacher with the best dev-split accuracy on the example's skill
  (ties: all tied teachers), 0 for the others.

Policies combine by multiplication (`[verified, confidence]`: correct answers only, the
confident ones more), and a skill can have its own list (`by_skill`), so several policies
are mixed within one batch. Where a policy has nothing to go on — no checker for the skill,
no dev score for it — it gives 1, i.e. falls back to uniform; that is the documented default.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from persea.errors import PerseaError

POLICIES = ("uniform", "confidence", "verified", "best_teacher")


def _uniform(examples, **_) -> np.ndarray:
    return np.ones(len(examples), np.float64)


def _verified(examples, **_) -> np.ndarray:
    return np.array([1.0 if e.correct is None else float(e.correct) for e in examples])


def _confidence(examples, tau: float = 1.0, **_) -> np.ndarray:
    by_prompt: dict[int, list[int]] = defaultdict(list)
    for i, e in enumerate(examples):
        by_prompt[e.prompt_index].append(i)
    w = np.ones(len(examples))
    for idx in by_prompt.values():
        scores = np.array([examples[i].mean_logprob for i in idx]) / tau
        soft = np.exp(scores - scores.max())
        w[idx] = soft / soft.sum() * len(idx)
    return w


def _best_teacher(examples, dev_scores: dict[str, dict[str, float]] | None = None, **_
                  ) -> np.ndarray:
    dev_scores = dev_scores or {}
    w = np.ones(len(examples))
    for i, e in enumerate(examples):
        scores = dev_scores.get(e.skill or "")
        if not scores:
            continue
        best = max(scores.values())
        w[i] = 1.0 if scores.get(e.teacher, -1.0) >= best else 0.0
    return w


_FUNCS = {"uniform": _uniform, "confidence": _confidence, "verified": _verified,
          "best_teacher": _best_teacher}


def _policy_lists(examples, policies, by_skill):
    by_skill = by_skill or {}
    for name in [*policies, *(p for ps in by_skill.values() for p in ps)]:
        if name not in _FUNCS:
            raise PerseaError(f"unknown weighting policy {name!r}; expected one of: "
                              f"{', '.join(POLICIES)}")
    return [by_skill.get(e.skill or "", policies) for e in examples]


def _per_policy(examples, dev_scores, tau):
    cache: dict[str, np.ndarray] = {}

    def weights_of(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = _FUNCS[name](examples, dev_scores=dev_scores, tau=tau)
        return cache[name]
    return weights_of


def example_weights(examples, policies: list[str], by_skill: dict[str, list[str]] | None = None,
                    dev_scores=None, tau: float = 1.0) -> np.ndarray:
    """One weight per example: the product of its skill's policies (or the default list)."""
    lists = _policy_lists(examples, policies, by_skill)
    weights_of = _per_policy(examples, dev_scores, tau)
    out = np.ones(len(examples))
    for i, names in enumerate(lists):
        for name in names:
            out[i] *= weights_of(name)[i]
    return out


def drop_reasons(examples, policies: list[str], by_skill: dict[str, list[str]] | None = None,
                 dev_scores=None, tau: float = 1.0) -> list[str | None]:
    """Why each example gets weight 0 (None where it does not): the first policy of its list
    that gives 0, e.g. `verified: checker rejected`, `best_teacher: not best on skill kb`,
    `confidence: weight underflowed to 0`; `zero weight` when only the product is 0."""
    lists = _policy_lists(examples, policies, by_skill)
    weights_of = _per_policy(examples, dev_scores, tau)
    out: list[str | None] = []
    for i, (e, names) in enumerate(zip(examples, lists)):
        zero = next((n for n in names if weights_of(n)[i] == 0), None)
        total = float(np.prod([weights_of(n)[i] for n in names])) if names else 1.0
        if zero == "verified":
            out.append("verified: checker rejected")
        elif zero == "best_teacher":
            out.append(f"best_teacher: not best on skill {e.skill}")
        elif zero is not None:
            out.append(f"{zero}: weight underflowed to 0")
        else:
            out.append("zero weight" if total == 0 else None)
    return out
