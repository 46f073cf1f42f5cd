"""The linear-time spans equal the quadratic reference on every built-in teacher's tokenizer
(byte-level BPE, Unigram, character-level), for real texts and for arbitrary ids."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persea.align.tokens import special_ids
from persea.models.builtin import builtin_models
from persea.models.offsets import spans_by_full_prefixes, spans_from_ids

_PIECES = ["é", "e\u0301", "日本", "✓", "👍🏽", "🇫🇷", " ", "  ", "\n", "\t", "\ufffd",
           "12 + 30 =", "héllo wörld", "Paris", "sort: b a c"]
texts = st.lists(st.one_of(st.text(st.characters(codec="utf-8"), max_size=8),
                           st.sampled_from(_PIECES)), max_size=12).map("".join)


@pytest.fixture(scope="module", params=["qwen3-toy", "gemma3-toy", "gptoss-toy"])
def teacher_tok(request):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(builtin_models()[request.param].path))
    decode = lambda ids: tok.decode(ids, skip_special_tokens=True,  # noqa: E731
                                    clean_up_tokenization_spaces=False)
    return tok, decode, special_ids(tok)


@settings(max_examples=40, deadline=None)
@given(text=texts)
def test_linear_spans_equal_the_reference_on_texts(teacher_tok, text):
    tok, decode, special = teacher_tok
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert spans_from_ids(decode, ids, special) == spans_by_full_prefixes(decode, ids, special)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_linear_spans_equal_the_reference_on_any_ids(teacher_tok, data):
    tok, decode, special = teacher_tok
    ids = data.draw(st.lists(st.integers(0, len(tok) - 1), max_size=24))
    assert spans_from_ids(decode, ids, special) == spans_by_full_prefixes(decode, ids, special)


def test_long_responses_decode_short_windows(teacher_tok):
    """Each step decodes a window of a few tokens, never the whole prefix."""
    tok, decode, special = teacher_tok
    ids = tok("The answer is 42. " * 40, add_special_tokens=False)["input_ids"]
    lengths: list[int] = []

    def counting(window):
        lengths.append(len(window))
        return decode(window)

    assert spans_from_ids(counting, ids, special) == spans_by_full_prefixes(decode, ids, special)
    assert max(lengths[1:]) <= 8 and len(lengths) <= 2 * len(ids) + 1
