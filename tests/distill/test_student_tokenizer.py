"""The words-and-characters student tokenizer and the compact chat format."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from persea.distill.tokenizer import frequent_words, train_words_and_chars, wrap
from persea.models.templates import COMPACT

CORPUS = (["Reverse the word: kalo", "Sort these words: kalo, mine, rutor",
           "What is the capital of Brealand?"] * 5 + ["Reverse the word: xqzt"])


def _tok(vocab_size=2000, min_count=4, split_compounds=False):
    return wrap(train_words_and_chars(CORPUS, COMPACT, vocab_size, min_count, split_compounds),
                COMPACT)


def test_frequent_words_are_one_token_rare_ones_are_spelt():
    tok = _tok()
    pieces = tok.convert_ids_to_tokens(tok("Reverse the word: xqzt", add_special_tokens=False)
                                       ["input_ids"])
    assert pieces == ["Reverse", "Ġthe", "Ġword", ":", "Ġ", "x", "q", "z", "t"]
    # a known word inside a longer run of letters is not cut out of it
    pieces = tok.convert_ids_to_tokens(tok("kalotheword", add_special_tokens=False)["input_ids"])
    assert pieces == list("kalotheword")
    assert tok.convert_ids_to_tokens(tok("Brealand", add_special_tokens=False)["input_ids"]) \
        == ["Brealand"]


def test_vocab_size_caps_the_words_by_frequency():
    assert frequent_words(CORPUS, 4, 3) == ["the", "kalo", "Reverse"]  # 11, 10, 6 times
    assert frequent_words(CORPUS, 6, 99)[-2:] == ["Reverse", "word"]  # ties: alphabetical
    small = _tok(vocab_size=len(COMPACT.special_tokens) + 1 + 256 + 4)  # room for 2 words
    vocab = small.get_vocab()
    assert {"the", "Ġthe", "kalo", "Ġkalo"} <= set(vocab) and "Reverse" not in vocab


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40), st.booleans())
def test_any_text_round_trips_without_unknown_tokens(text, split_compounds):
    tok = _tok(split_compounds=split_compounds)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids, clean_up_tokenization_spaces=False) == text


def test_compact_chat_format_costs_four_tokens_around_a_prompt():
    tok = _tok()
    text = tok.apply_chat_template([{"role": "user", "content": "Reverse the word: kalo"}],
                                   add_generation_prompt=True, tokenize=False)
    assert text == "<|begin_of_text|><|user|>Reverse the word: kalo<|end|><|assistant|>"
    n_prompt = len(tok("Reverse the word: kalo", add_special_tokens=False)["input_ids"])
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == n_prompt + 4
    assert tok.eos_token == "<|end|>"


def test_split_compounds_drops_words_made_of_kept_words_and_writes_them_as_parts():
    from persea.distill.tokenizer import drop_compounds

    # bita = bi + ta; bitabi = bi + ta + bi; kalo has no kept parts; "bit" + "a" needs a
    # one-letter part, which is never a kept word
    assert drop_compounds(["bita", "bi", "ta", "bitabi", "kalo", "bit"]) == \
        ["bi", "ta", "kalo", "bit"]
    corpus = ["Sort these words: bi, ta, bita, zu, bizu"] * 5 + ["Reverse the word: bitazq"]
    split = wrap(train_words_and_chars(corpus, COMPACT, 2000, 4, split_compounds=True), COMPACT)
    whole = wrap(train_words_and_chars(corpus, COMPACT, 2000, 4), COMPACT)

    def pieces(tok, text):
        return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])

    assert "Ġbita" not in split.get_vocab() and "Ġbita" in whole.get_vocab()
    assert pieces(split, "Sort: bita, bizu") == ["Sort", ":", "Ġbi", "ta", ",", "Ġbi", "zu"]
    assert pieces(whole, "Sort: bita, bizu") == ["Sort", ":", "Ġbita", ",", "Ġbizu"]
    # a run that does not split wholly into kept words is still spelt, letter by letter
    assert pieces(split, "bitazq") == list("bitazq")
    for text in ["bita,bizu tabi", "bitazq bi ta", "Ġbi"]:
        ids = split(text, add_special_tokens=False)["input_ids"]
        assert split.decode(ids, clean_up_tokenization_spaces=False) == text
