"""Character spans read off token ids: `persea.models.offsets.spans_from_ids`.

The truth they are held to comes from bytes: in a byte-level tokenizer every token is a run
of UTF-8 bytes, so the characters a token touches are known exactly.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persea.models.offsets import spans_from_ids

from .spans_check import assert_well_formed, token_bytes, true_spans

REPL = "\ufffd"


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def special(tok):
    return set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items()
                                      if t.special}


def _decoder(tok):
    return lambda ids: tok.decode(ids, skip_special_tokens=True,
                                  clean_up_tokenization_spaces=False)


# -- property: real text through the real byte-level tokenizer ---------------------------

_PIECES = ["é", "e\u0301", "日本", "語", "✓", "👍", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "\u0301",
           "\u200d", "ß", "Ω", "ǅ", " ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u3000", "\x00",
           REPL, "héllo wörld", "a", "12"]
texts = st.lists(st.one_of(st.text(st.characters(codec="utf-8"), max_size=6),
                           st.sampled_from(_PIECES)), max_size=8).map("".join)


@settings(max_examples=60, deadline=None)
@given(text=texts)
def test_spans_of_any_text_match_the_tokens_bytes(tok, special, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = token_bytes(tok, ids, special)
    assert b"".join(pieces) == text.encode()  # byte-level BPE loses nothing

    decoded, spans = spans_from_ids(_decoder(tok), ids, special)

    assert decoded == text
    assert len(spans) == len(ids)
    assert_well_formed(text, spans)
    truth = true_spans(text, pieces)
    for i, ((s, e), want) in enumerate(zip(spans, truth)):
        assert s <= want[0] and want[1] <= e, f"token {i} {pieces[i]!r}: {(s, e)} misses {want}"
    if REPL not in text:  # exact; a literal U+FFFD is ambiguous (see the hand cases below)
        assert spans == truth


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_spans_of_any_ids_are_well_formed(tok, special, data):
    """What an untrained model emits: any ids, invalid UTF-8 and special tokens included."""
    ids = data.draw(st.lists(st.integers(0, len(tok) - 1), max_size=12))
    decode = _decoder(tok)

    text, spans = spans_from_ids(decode, ids, special)

    assert text == decode(ids)
    assert len(spans) == len(ids)
    assert_well_formed(text, spans)
    for i, (s, e) in enumerate(spans):
        if ids[i] in special:
            assert s == e


def test_fragments_of_a_character_get_exactly_its_span(tok, special):
    text = "日本 héllo 👍🏽!"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = token_bytes(tok, ids, special)
    truth = true_spans(text, pieces)
    fragments = [i for i, (s, e) in enumerate(truth)
                 if e - s == 1 and len(pieces[i]) < len(text[s].encode())]
    assert len(fragments) >= 3, "the tokenizer should split some characters into bytes"

    _, spans = spans_from_ids(_decoder(tok), ids, special)

    for i in fragments:
        assert spans[i] == truth[i], f"fragment {pieces[i]!r} of {text[truth[i][0]]!r}"


def test_special_tokens_get_an_empty_span_where_they_stand(tok, special):
    eos = tok.eos_token_id
    head = tok("Hi 日本", add_special_tokens=False)["input_ids"]
    tail = tok(" ok", add_special_tokens=False)["input_ids"]
    ids = head + [eos] + tail + [eos]

    text, spans = spans_from_ids(_decoder(tok), ids, special)
    _, plain = spans_from_ids(_decoder(tok), head + tail, special)

    assert text == "Hi 日本 ok"
    assert spans[len(head)] == (5, 5)  # after "Hi 日本"
    assert spans[-1] == (8, 8)  # at the very end
    assert spans[:len(head)] + spans[len(head) + 1:-1] == plain  # the others do not move


# -- hand cases on a byte-level decode whose tokens are given as bytes -------------------

EOS = 99


def _bytes_decode(vocab: dict[int, bytes]):
    def decode(ids):
        return b"".join(vocab[i] for i in ids if i != EOS).decode("utf-8", errors="replace")
    return decode


@pytest.mark.parametrize("pieces, text, spans", [
    pytest.param([b"\xe6", b"\x97", b"\xa5"], "日", [(0, 1)] * 3, id="three-byte-char"),
    pytest.param([b"\xf0\x9f", b"\x91\x8d"], "👍", [(0, 1)] * 2, id="four-byte-char"),
    pytest.param([b"\xe6\x97", b"\xa5\xe6\x9c\xac"], "日本", [(0, 1), (0, 2)],
                 id="completing-token-carries-more"),
    pytest.param([b"a", b" \xe6", b"\x97\xa5"], "a 日", [(0, 1), (1, 3), (2, 3)],
                 id="token-ends-inside-a-char"),
    pytest.param([b"a", b"\xc3", b"\xa9", b"\xc3", b"\xa9"], "aéé",
                 [(0, 1), (1, 2), (1, 2), (2, 3), (2, 3)], id="repeated-two-byte-chars"),
    pytest.param([b"a", b"\xe6\x97"], "a" + REPL, [(0, 1), (1, 2)], id="cut-inside-a-char"),
    pytest.param([b"a", EOS, b"b", EOS], "ab", [(0, 1), (1, 1), (1, 2), (2, 2)],
                 id="eos-middle-and-end"),
    pytest.param([b"a", b"\xe6", EOS], "a" + REPL, [(0, 1), (1, 2), (2, 2)],
                 id="eos-after-a-cut-char"),
    pytest.param([EOS], "", [(0, 0)], id="eos-alone"),
    pytest.param([], "", [], id="nothing"),
])
def test_byte_level_hand_cases(pieces, text, spans):
    vocab = {i: p for i, p in enumerate(pieces) if p != EOS}
    ids = [EOS if p == EOS else i for i, p in enumerate(pieces)]

    assert spans_from_ids(_bytes_decode(vocab), ids, {EOS}) == (text, spans)


def test_a_literal_replacement_character_is_still_covered_by_its_bytes():
    """U+FFFD in the text looks, to a decode-only method, like a character still pending:
    its three byte tokens get its span and the next token reaches back over it."""
    pieces = [b"a", b"\xef", b"\xbf", b"\xbd", b"b"]
    vocab = dict(enumerate(pieces))

    text, spans = spans_from_ids(_bytes_decode(vocab), list(vocab), set())

    assert text == "a" + REPL + "b"
    assert spans[:4] == [(0, 1), (1, 2), (1, 2), (1, 2)]
    assert spans[4][0] <= 2 and spans[4][1] == 3
    assert_well_formed(text, spans)


def test_invalid_bytes_are_covered():
    """Garbage an untrained model may emit: a lone continuation byte, a lead byte followed by
    ASCII, a cut character at the end. Every token's span holds the characters its bytes
    made (a replacement character may also be claimed by the token after it)."""
    pieces = [b"\x80", b"x", b"\xe6", b"(", b"\x97\x97", b"\xe6"]
    made = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (6, 7)]  # "\ufffdx\ufffd(\ufffd\ufffd\ufffd"
    vocab = dict(enumerate(pieces))

    text, spans = spans_from_ids(_bytes_decode(vocab), list(vocab), set())

    assert text == b"".join(pieces).decode("utf-8", errors="replace") == "\ufffdx\ufffd(" + REPL * 3
    assert_well_formed(text, spans)
    for (s, e), (ms, me) in zip(spans, made, strict=True):
        assert s <= ms and me <= e, (spans, made)


# -- decoders that are not byte-level ---------------------------------------------------

def _metaspace_decode(vocab: dict[int, str]):
    """SentencePiece-like: "▁" is a space, the first token's leading space is dropped, and
    `<0xNN>` pieces are raw bytes (byte fallback)."""
    def decode(ids):
        raw = b""
        for i in ids:
            piece = vocab[i]
            if piece == "</s>":
                continue
            m = re.fullmatch(r"<0x([0-9A-F]{2})>", piece)
            raw += bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode()
        text = raw.decode("utf-8", errors="replace")
        return text[1:] if text.startswith(" ") else text
    return decode


METASPACE = {0: "▁Hello", 1: "▁wor", 2: "ld", 3: "!", 4: "▁", 5: "</s>", 6: "<0xE6>",
             7: "<0x97>", 8: "<0xA5>", 9: "▁Hi"}


@pytest.mark.parametrize("ids, text, spans", [
    pytest.param([0, 1, 2, 3, 5], "Hello world!", [(0, 5), (5, 9), (9, 11), (11, 12), (12, 12)],
                 id="leading-space-stripped"),
    pytest.param([4, 0], " Hello", [(0, 6), (0, 6)], id="lone-leading-space-joins-next"),
    pytest.param([9, 6, 7, 8, 4, 2], "Hi日 ld", [(0, 2), (2, 3), (2, 3), (2, 3), (3, 4), (4, 6)],
                 id="byte-fallback"),
])
def test_metaspace_like_decode(ids, text, spans):
    decode = _metaspace_decode(METASPACE)
    assert spans_from_ids(decode, ids, {5}) == (text, spans)
