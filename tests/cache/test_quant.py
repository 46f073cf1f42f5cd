"""One-byte top-k log-probabilities: exact bounds, checked against hand-computed values."""

from __future__ import annotations

import numpy as np

from persea.cache import quant


def test_round_trip_by_hand():
    lp = np.array([[0.0, -0.03, -1.0, -20.0, -np.inf]], np.float32)
    codes = quant.quantize(lp)
    # -0.03 / (1/16) = 0.48 -> 0; -1 -> 16; -20 clips to 254; -inf is "absent"
    assert codes.tolist() == [[0, 0, 16, 254, 255]]
    back = quant.dequantize(codes)
    assert back[0, :4].tolist() == [0.0, 0.0, -1.0, -254 / 16]
    assert back[0, 4] == -np.inf


def test_error_bound_holds_on_random_distributions():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(200, 500))
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    top = -np.sort(-lp, axis=-1)[:, :32]
    err = quant.reconstruction_error(top)
    assert err["max_abs_logprob"] <= quant.STEP / 2 + 1e-6
    assert 0 <= err["kl_topk_mean"] < 1e-3
    assert 0 < err["mean_abs_prob"] < 0.01


def test_tail_mass_by_hand():
    lp = np.log(np.array([[0.5, 0.25, 0.125]]))
    assert np.allclose(quant.tail_mass(lp), [0.125])
    assert quant.tail_mass(np.array([[0.0, 0.0]])).tolist() == [0.0]  # clipped, not negative
