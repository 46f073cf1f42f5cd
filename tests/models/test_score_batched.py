"""Batched teacher-forced scoring equals one sequence at a time, on every built-in family."""

from __future__ import annotations

import numpy as np
import pytest

from persea.models import hf
from persea.models.builtin import builtin_models
from persea.models.sources import load_hf_dir

PROMPTS = ["What is 12 + 30?", "Reverse: persea", "Sort: pear apple fig",
           "How many r in strawberry?", "Capital of France?"]
ANSWERS = ["42", "aesrep, and a longer answer so the batch is ragged", "apple fig pear",
           "3", ""]


@pytest.mark.parametrize("family", ["qwen3-toy", "gemma3-toy", "gptoss-toy"])
def test_batched_scores_equal_unbatched(family, monkeypatch):
    model = load_hf_dir(family, builtin_models()[family].path)
    batched = model.score(PROMPTS, ANSWERS, top_k=4)
    monkeypatch.setattr(hf, "SCORE_BATCH", 1)
    single = model.score(PROMPTS, ANSWERS, top_k=4)
    assert len(batched) == len(single) == len(PROMPTS)
    for b, s in zip(batched, single):
        assert b.token_ids == s.token_ids and b.spans == s.spans and b.text == s.text
        np.testing.assert_allclose(b.logprobs, s.logprobs, atol=1e-4)
        np.testing.assert_allclose(b.topk_logprobs, s.topk_logprobs, atol=1e-4)
        # ties aside, the same alternatives in the same order
        assert (b.topk_ids[:, 0] == s.topk_ids[:, 0]).all()
