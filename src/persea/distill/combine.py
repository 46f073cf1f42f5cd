"""Combining several teachers at the same position of the same text.

With `harvest.cross_score`, every white-box teacher has scored every other teacher's
responses, so for one response text (written by its *author*) the cache holds one signal per
teacher. Each teacher's tokens are aligned to the student's separately
(`persea.align.aligned_starts`; their tokenisations differ), giving for teacher t a
`Signal`: the student response positions j where t has an aligned start, and there its
top-k carried onto student ids (`carry_topk`; -1 for a candidate with no student match),
its tail mass outside the top-k, and its confidence `conf_t(j)`: its probability of the
text's next token in its own tokenisation (for the author: of the token it wrote).

At every student position where at least one teacher has an aligned start, with `S(j)` the
teachers present there:

**average** (`loss.combine: average`): the mixture

    p(x) = sum_{t in S(j)} w~_t p_t(x),    w~_t = w_t / sum_{s in S(j)} w_s

over the union of the carried student ids (the same id from two teachers: probabilities
add); each teacher's unmatched candidates stay separate id -1 entries, scaled by w~_t, and

    tail(j) = sum_t w~_t tail_t(j),    conf(j) = sum_t w~_t conf_t(j).

A mixture of distributions is a distribution: if each teacher's stored mass
`sum_c p_t(c) + tail_t <= 1`, so is the mixture's. One-byte quantisation can put a stored row
slightly over 1 (at most 3.2% per entry), so rows over 1 are first rescaled to
`sum_c p_t(c) = 1 - tail_t`; the mixture's mass is then at most 1 (tested on random inputs).
The weights `w_t` are uniform unless dev-split accuracies are known (`best_teacher` in the
weighting computes them): then `w_t` is teacher t's dev accuracy on the example's skill
(`teacher_weights`), so a teacher that cannot do a skill does not dilute the one that can.

**select** (`loss.combine: select`): the one teacher most confident about the text there,

    t*(j) = argmax_{t in S(j)} conf_t(j)    (ties: the author, then project order)

supplies the whole target (its carried top-k, tail and confidence). Note that confidence is
per token of each teacher's own tokenisation: a teacher with short tokens (characters)
predicts each piece more easily than one with whole words, which favours it.

Rows come out sorted by probability, best first, with as many columns as the widest row;
`pad` brings a set of examples to one width with absent entries (id -1, log-prob -inf),
which the losses read as zero probability: `cross_tokenizer_kd` counts as matched only
finite entries with an id, gives an absent entry probability 0 in its ULD term (so the
sort puts it last), and `bucket_logprobs` gives -inf zero mass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Signal:
    """One teacher's aligned signal on one response, in the Example's kd_* layout."""

    teacher: str
    pos: np.ndarray  # [m] student response-token indices, increasing
    ids: np.ndarray  # [m, k] student ids; -1: no student match, or absent
    logp: np.ndarray  # [m, k] log-probabilities; -inf: absent
    tail: np.ndarray  # [m] probability outside the teacher's top-k
    conf: np.ndarray  # [m] the teacher's probability of the text's next token there


def _probs(sig: Signal) -> np.ndarray:
    """Probabilities of a signal's entries, rows whose mass exceeds 1 rescaled so that
    `sum p + tail = 1` (quantisation can overshoot a little)."""
    p = np.where(np.isfinite(sig.logp), np.exp(sig.logp.astype(np.float64)), 0.0)
    tail = np.clip(sig.tail.astype(np.float64), 0.0, 1.0)
    total = p.sum(-1)
    over = total + tail > 1.0
    scale = np.where(over, (1.0 - tail) / np.maximum(total, 1e-300), 1.0)
    return p * scale[:, None]


def _finish(teacher: str, pos, ids, p, tail, conf) -> Signal:
    """Sort each row best first, drop columns that are absent everywhere, back to log."""
    ids = np.where(p > 0, ids, -1)
    order = np.argsort(-p, axis=1, kind="stable")
    p = np.take_along_axis(p, order, 1)
    ids = np.take_along_axis(ids, order, 1)
    width = max(int((p > 0).sum(1).max(initial=0)), 1)
    p, ids = p[:, :width], ids[:, :width]
    with np.errstate(divide="ignore"):
        logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), -np.inf)
    return Signal(teacher, pos.astype(np.int64), ids.astype(np.int64),
                  logp.astype(np.float32), tail.astype(np.float32), conf.astype(np.float32))


def _merge_same_ids(ids: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Within each row, add the probabilities of entries with the same student id (>= 0)
    into the first of them; the others become 0. Returns the new probabilities."""
    p = p.copy()
    rows, cols = np.nonzero((ids >= 0) & (p > 0))
    if not len(rows):
        return p
    key = rows.astype(np.int64) * (int(ids.max()) + 1) + ids[rows, cols]
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    summed = np.zeros(len(first))
    np.add.at(summed, inverse, p[rows, cols])
    p[rows, cols] = 0.0
    p[rows[first], cols[first]] = summed
    return p


def _union(signals: list[Signal]) -> tuple[np.ndarray, list[np.ndarray]]:
    positions = np.unique(np.concatenate([s.pos for s in signals] + [np.zeros(0, np.int64)]))
    return positions, [np.searchsorted(positions, s.pos) for s in signals]


def average(signals: list[Signal], weights: list[float] | None = None) -> Signal:
    """The weighted mixture of the teachers present at each position (module docstring)."""
    positions, where = _union(signals)
    n = len(positions)
    w = np.ones(len(signals)) if weights is None else np.asarray(weights, np.float64)
    present = np.zeros((len(signals), n), bool)
    for t, idx in enumerate(where):
        present[t, idx] = True
    W = np.where(present, w[:, None], 0.0)
    # all teachers present with weight 0: fall back to uniform over them
    W = np.where(present & (W.sum(0) <= 0)[None, :], 1.0, W)
    W = W / np.maximum(W.sum(0), 1e-300)[None, :]
    width = sum(s.ids.shape[1] for s in signals)
    ids = np.full((n, width), -1, np.int64)
    p = np.zeros((n, width))
    tail = np.zeros(n)
    conf = np.zeros(n)
    col = 0
    for t, (sig, idx) in enumerate(zip(signals, where)):
        k = sig.ids.shape[1]
        wt = W[t, idx]
        ids[idx, col:col + k] = sig.ids
        p[idx, col:col + k] = _probs(sig) * wt[:, None]
        tail[idx] += wt * np.clip(sig.tail.astype(np.float64), 0.0, 1.0)
        conf[idx] += wt * sig.conf
        col += k
    p = _merge_same_ids(ids, p)
    return _finish(signals[0].teacher if signals else "", positions, ids, p, tail, conf)


def select(signals: list[Signal]) -> Signal:
    """At each position, the target of the most confident teacher present there;
    `signals[0]` (the author) wins ties, then the order given."""
    positions, where = _union(signals)
    n = len(positions)
    C = np.full((len(signals), n), -np.inf)
    for t, (sig, idx) in enumerate(zip(signals, where)):
        C[t, idx] = sig.conf
    choice = np.argmax(C, axis=0)  # the first maximum: the author on ties
    width = max([s.ids.shape[1] for s in signals] + [1])
    ids = np.full((n, width), -1, np.int64)
    p = np.zeros((n, width))
    tail = np.zeros(n)
    conf = np.zeros(n)
    for t, (sig, idx) in enumerate(zip(signals, where)):
        mine = choice[idx] == t
        rows, k = idx[mine], sig.ids.shape[1]
        ids[rows, :k] = sig.ids[mine]
        p[rows, :k] = _probs(sig)[mine]
        tail[rows] = sig.tail[mine]
        conf[rows] = sig.conf[mine]
    return _finish(signals[0].teacher if signals else "", positions, ids, p, tail, conf)


def combine(signals: list[Signal], how: str, weights: list[float] | None = None) -> Signal:
    if how == "average":
        return average(signals, weights)
    if how == "select":
        return select(signals)
    raise ValueError(f"unknown combine {how!r}; expected average or select")


def teacher_weights(teachers: list[str], skill: str | None,
                    dev_scores: dict[str, dict[str, float]] | None) -> list[float]:
    """Mixture weights for `average`: each teacher's dev accuracy on `skill` when known
    (and not all zero), else uniform."""
    scores = (dev_scores or {}).get(skill or "") or {}
    w = [float(scores.get(t, 0.0)) for t in teachers]
    return w if scores and sum(w) > 0 else [1.0] * len(teachers)


def pad(ids: np.ndarray, logp: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Widen `[m, k]` rows to `width` columns with absent entries (id -1, log-prob -inf)."""
    extra = width - ids.shape[1]
    if extra <= 0:
        return ids, logp
    return (np.pad(ids, ((0, 0), (0, extra)), constant_values=-1),
            np.pad(logp, ((0, 0), (0, extra)), constant_values=-np.inf).astype(np.float32))
