"""Checks on character spans shared by the model-layer tests, and the byte-level truth they
are compared with."""

from __future__ import annotations


def assert_well_formed(text: str, spans: list[tuple[int, int]]) -> None:
    """Spans lie in the text, start <= end, starts never go back, and every character of the
    text belongs to at least one token."""
    for s, e in spans:
        assert 0 <= s <= e <= len(text), (s, e, len(text))
    starts = [s for s, _ in spans]
    assert starts == sorted(starts), spans
    covered = {c for s, e in spans for c in range(s, e)}
    missing = sorted(set(range(len(text))) - covered)
    assert not missing, f"characters {missing} of {text!r} belong to no token: {spans}"


def _gpt2_byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


BYTE_OF_CHAR = {ch: b for b, ch in _gpt2_byte_alphabet().items()}


def token_bytes(tokenizer, ids: list[int], special_ids: set[int]) -> list[bytes]:
    """The UTF-8 bytes each id of a byte-level BPE tokenizer stands for (b"" for specials)."""
    return [b"" if i in special_ids else bytes(BYTE_OF_CHAR[c] for c in piece)
            for i, piece in zip(ids, tokenizer.convert_ids_to_tokens(ids))]


def true_spans(text: str, pieces: list[bytes]) -> list[tuple[int, int] | None]:
    """The characters each token's bytes fall in, for pieces that concatenate to valid UTF-8
    `text`; None for a token without bytes."""
    owner = [c for c, ch in enumerate(text) for _ in ch.encode()]
    assert len(owner) == sum(len(p) for p in pieces)
    spans, pos = [], 0
    for p in pieces:
        spans.append((owner[pos], owner[pos + len(p) - 1] + 1) if p else None)
        pos += len(p)
    return spans
