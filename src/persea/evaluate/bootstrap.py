"""Percentile bootstrap confidence intervals for means of per-item outcomes.

Given the n per-item values of one metric, draw `resamples` samples of n indices with
replacement (numpy's PCG64 seeded with `seed`, one row of n draws per resample, in order),
take each resample's mean, and report the `(1 - confidence) / 2` and `(1 + confidence) / 2`
percentiles of those means (linear interpolation, numpy's default). The same values, seed
and settings always give the same interval.

For a difference between two models on the same items (`paired_diff_ci`) the same indices
are drawn for both, so the interval reflects item-to-item agreement rather than two
independent spreads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _bounds(means: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [100.0 * tail, 100.0 * (1.0 - tail)])
    return float(low), float(high)


def bootstrap_ci(values, resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> Interval:
    """Mean of `values` with its percentile bootstrap interval; no values: all NaN, n=0."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    means = v[_indices(v.size, resamples, seed)].mean(axis=1)
    low, high = _bounds(means, confidence)
    return Interval(float(v.mean()), low, high, int(v.size))


def paired_diff_ci(a, b, resamples: int = 1000, confidence: float = 0.95,
                   seed: int = 0) -> Interval:
    """Mean of `a - b` (aligned item by item) with its percentile bootstrap interval."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in length: {a.size} and {b.size}")
    return bootstrap_ci(a - b, resamples, confidence, seed)
