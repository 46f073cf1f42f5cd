"""Aligning two tokenizations of the same text by character offsets.

Two tokenizers cut a text differently; they agree only at some character positions. A
position `c` is a *boundary* of a tokenization when its first `m` tokens cover exactly
`[0, c)` and token `m` starts at `c` (so a byte token in the middle of a multi-byte
character is never one). Where both tokenizations have a boundary at `c`, both models
predict their next token from the same text, so their next-token distributions can be
compared: that pairs teacher token `i` with student token `j` (`aligned_starts`). Between
consecutive shared boundaries lie *chunks*, spans of text that each side covers with its
own tokens; their summed log-probabilities are comparable (`chunks`).

Special tokens have empty spans at the end of the text they follow (an end-of-turn token
sits at `len(text)`), so both sides' end-of-turn tokens pair up as well.
"""

from __future__ import annotations

from dataclasses import dataclass


def boundaries(spans: list[tuple[int, int]]) -> dict[int, int]:
    """Map each boundary position to the index of the first token that starts there.

    The end of the covered text maps to `len(spans)` unless a token (a special one, with an
    empty span) starts there."""
    out: dict[int, int] = {}
    reach = 0  # how far the tokens so far cover
    for m, (start, end) in enumerate(spans):
        if start == reach and start not in out:
            out[start] = m
        reach = max(reach, end)
    out.setdefault(reach, len(spans))
    return out


def aligned_starts(teacher: list[tuple[int, int]], student: list[tuple[int, int]]
                   ) -> list[tuple[int, int]]:
    """Pairs (i, j) of a teacher and a student token that start at the same boundary, in
    text order. Both models predicted them from the same text."""
    tb, sb = boundaries(teacher), boundaries(student)
    return [(tb[c], sb[c]) for c in sorted(set(tb) & set(sb))
            if tb[c] < len(teacher) and sb[c] < len(student)]


@dataclass(frozen=True)
class Chunk:
    """Text `[start, end)` covered by teacher tokens `t0:t1` and student tokens `s0:s1`."""

    start: int
    end: int
    t0: int
    t1: int
    s0: int
    s1: int


def chunks(teacher: list[tuple[int, int]], student: list[tuple[int, int]]) -> list[Chunk]:
    """The text cut at every shared boundary; every token of either side lies in exactly one
    chunk. Trailing special tokens (empty spans at the end) form a last chunk of their own
    when both sides have them."""
    tb, sb = boundaries(teacher), boundaries(student)
    shared = sorted(set(tb) & set(sb))
    out: list[Chunk] = []
    for a, b in zip(shared, shared[1:]):
        out.append(Chunk(a, b, tb[a], tb[b], sb[a], sb[b]))
    if shared:
        end = shared[-1]
        t0, s0 = tb[end], sb[end]
        if t0 < len(teacher) or s0 < len(student):
            out.append(Chunk(end, end, t0, len(teacher), s0, len(student)))
    return out
