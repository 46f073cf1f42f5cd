"""Carrying a teacher's top-k candidates onto the student's vocabulary."""

from __future__ import annotations

import numpy as np


def carry_topk(topk_ids: np.ndarray, topk_logp: np.ndarray, mapping: np.ndarray,
               actual: np.ndarray | None = None, bound: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Map teacher candidate ids (`[N, k]`) to student ids through `mapping` (teacher id ->
    student id or -1).

    Returns `(student_ids, logp)`, both `[N, k]`. A candidate with no student match keeps its
    log-probability with id -1 (the unmatched mass, for ULD). Two candidates with the same
    text (a byte piece `<0x41>` and the piece `A`, say) land on one student id: their
    probabilities are added into the first and the second becomes absent (id -1, -inf), so
    each student id appears at most once per row and the carried probabilities of a row
    never sum to more than the teacher's own.

    `bound` (`[student vocabulary]` booleans, `persea.align.context_bound`) marks student ids
    whose meaning depends on what follows them: a word-level student's ` go` is the whole
    word "go". The same text from the teacher may be only the start of a longer word
    (` go` + `fe`), so a candidate lands on a bound id only in row `n` where that id is
    `actual[n]`, the token the student's tokenizer wrote there; elsewhere it is unmatched,
    as if the student had no such id. With no bound id the result is as without them.
    """
    ids = np.where(topk_ids >= 0, mapping[np.clip(topk_ids, 0, len(mapping) - 1)], -1)
    logp = topk_logp.astype(np.float32).copy()
    ids = ids.astype(np.int64)
    if bound is not None and actual is not None and bound.any() and ids.size:
        on_bound = (ids >= 0) & bound[np.clip(ids, 0, len(bound) - 1)]
        ids = np.where(on_bound & (ids != np.asarray(actual, np.int64)[:, None]), -1, ids)
    for n in range(ids.shape[0]):
        row = ids[n]
        seen: dict[int, int] = {}
        for c in range(row.shape[0]):
            sid = int(row[c])
            if sid < 0 or not np.isfinite(logp[n, c]):
                continue
            if sid in seen:
                first = seen[sid]
                logp[n, first] = np.logaddexp(logp[n, first], logp[n, c])
                ids[n, c] = -1
                logp[n, c] = -np.inf
            else:
                seen[sid] = c
    return ids, logp
