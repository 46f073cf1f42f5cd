"""Compact top-k log-probabilities: one byte each.

A stored top-k log-probability `lp <= 0` becomes the byte `q = round(-lp / STEP)`, clipped to
0..254; byte 255 marks an absent entry (an endpoint that returned fewer than k). With
STEP = 1/16 nat the round-trip error is at most 1/32 nat (a probability off by at most 3.2%
of itself) down to -15.9 nats; anything rarer (p < 1.3e-7) is stored as -15.9 nats.

The probability mass outside the top-k is not derivable from the rounded values, so the
harvest stores it exactly beside them (`tail_mass`, float16): a loss can then treat the
remainder explicitly instead of renormalising the top-k as if it were the whole vocabulary.
"""

from __future__ import annotations

import numpy as np

STEP = 1.0 / 16.0
ABSENT = 255
MAX_CODE = 254


def quantize(logprobs: np.ndarray) -> np.ndarray:
    lp = np.asarray(logprobs, dtype=np.float64)
    q = np.rint(np.clip(-lp, 0.0, None) / STEP)
    q = np.minimum(q, MAX_CODE)
    q[~np.isfinite(lp)] = ABSENT
    return q.astype(np.uint8)


def dequantize(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    lp = -codes.astype(np.float32) * np.float32(STEP)
    lp[codes == ABSENT] = -np.inf
    return lp


def tail_mass(logprobs: np.ndarray) -> np.ndarray:
    """1 - sum of the top-k probabilities, per row, clipped at 0 (float rounding)."""
    p = np.exp(np.asarray(logprobs, dtype=np.float64))
    return np.clip(1.0 - np.nansum(p, axis=-1), 0.0, 1.0)


def reconstruction_error(logprobs: np.ndarray) -> dict[str, float]:
    """How far the stored form is from the exact top-k, over the rows given ([n, k]).

    - `max_abs_logprob`: the largest |lp - lp'| over entries above the clipping floor;
    - `mean_abs_prob`: mean |p - p'| per entry;
    - `kl_topk_mean`: mean KL(p || p') in nats over each position's top-k plus its tail, with
      the tail stored exactly: the divergence a loss would see from using the stored form.
    """
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.size == 0:
        return {"max_abs_logprob": 0.0, "mean_abs_prob": 0.0, "kl_topk_mean": 0.0}
    rec = dequantize(quantize(lp)).astype(np.float64)
    finite = np.isfinite(lp)
    above = finite & (lp > -MAX_CODE * STEP)
    max_abs = float(np.max(np.abs(lp - rec)[above], initial=0.0))
    p = np.where(finite, np.exp(lp), 0.0)
    pr = np.where(finite, np.exp(rec), 0.0)
    mean_abs = float(np.mean(np.abs(p - pr)[finite])) if finite.any() else 0.0
    tail = tail_mass(lp)
    # p' is the stored top-k rescaled so that with the exact tail it sums to 1 again
    pr_norm = pr * ((1.0 - tail) / np.maximum(pr.sum(-1), 1e-30))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(np.maximum(pr_norm, 1e-300))), 0.0)
    return {"max_abs_logprob": max_abs, "mean_abs_prob": mean_abs,
            "kl_topk_mean": float(np.mean(terms.sum(-1)))}
