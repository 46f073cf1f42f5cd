"""Character spans of generated token ids.

Re-tokenising a generated text does not always give back the ids the model produced, so the
spans are read off the ids themselves: for every prefix of the ids, note how many
characters of the final text its decoding has settled. A byte-level token that ends in
the middle of a multi-byte character leaves that character pending (the prefix decodes with
a trailing U+FFFD in its place): the token's span reaches over the pending character, and a
token made only of such bytes gets exactly that character's span.

A text that itself holds U+FFFD is ambiguous to a method that only sees decoded strings (a
real U+FFFD looks like a pending character); there spans may come out wider than the
token's own characters, but every character is still covered by the tokens that make it.

Decoding every prefix from the start is quadratic in the response length
(`spans_by_full_prefixes`, kept as the definition the tests hold the fast path to).
`spans_from_ids` decodes incrementally instead. A clean point is a prefix that decoded
with nothing pending, exactly as the start of the final text. The prefix up to token i is
the text settled at the last clean point a, plus what `ids[p:i]` adds to `ids[p:a]`,
where p is the clean point before a: that context lets a decoder that treats a sequence's
first token specially (a SentencePiece leading space) or decodes runs of byte tokens as a
whole (byte fallback) see the new tokens as it would inside the text. Each step decodes
the few tokens since the clean point before last, so the whole costs time linear in the
length. Where the window's decoding does not extend the context's, or the context alone
decodes to other text (a decoder that is not local there), the step decodes the full
prefix instead; a response that never reaches a clean point (an untrained model's stream
of broken bytes) is quadratic again.
"""

from __future__ import annotations

_REPLACEMENT = "\ufffd"


def _settled(prefix: str, text: str) -> tuple[int, bool]:
    """How many leading characters of `text` the decoded `prefix` has fixed for good, and
    whether one more character is pending (started but not complete).

    An incomplete UTF-8 sequence at the end of a prefix decodes to one U+FFFD, so one
    trailing U+FFFD is never counted as settled."""
    c = len(prefix)
    pending = c > 0 and prefix[c - 1] == _REPLACEMENT
    if pending:
        c -= 1
    if not text.startswith(prefix[:c]):
        c = 0
        for a, b in zip(prefix, text):
            if a != b:
                break
            c += 1
        pending = False
    return c, pending


def _common(a: str, b: str, start: int = 0) -> int:
    """Length of the common prefix of `a` and `b[start:]`."""
    n = 0
    for x, y in zip(a, b[start:]):
        if x != y:
            break
        n += 1
    return n


def _incremental_settled(decode, ids: list[int], text: str):
    """(settled, pending) after each of ids[:1], ..., ids[:n-1], as `_settled` would give
    for the full prefix decodings, from short windows (see the module docstring)."""
    anchors = [(0, 0)]  # clean points: (token index, characters settled there)
    ctx, base = 0, ""  # the window's start (the clean point before the last) and its text
    for i in range(1, len(ids)):
        settled_at = anchors[-1][1]
        d = decode(ids[ctx:i]) if base is not None else None
        if d is None or not d.startswith(base):  # not local here: decode the full prefix
            prefix = decode(ids[:i])
            c, pending = _settled(prefix, text)
            clean = not pending and c == len(prefix)
        else:
            new = d[len(base):]
            pending = new.endswith(_REPLACEMENT)
            core = new[:-1] if pending else new
            if text.startswith(core, settled_at):
                c = settled_at + len(core)
            else:
                c, pending = settled_at + _common(new, text, settled_at), False
            clean = not pending and c == settled_at + len(new)
        yield c, pending
        if clean:
            anchors.append((i, c))
            ctx, ctx_chars = anchors[-2]
            base = decode(ids[ctx:i])
            if not text[ctx_chars:c].endswith(base):  # the context decodes otherwise alone
                base = None


def _spans(text: str, ids: list[int], special_ids: set[int], prefix_states
           ) -> list[tuple[int, int]]:
    n = len(ids)
    settled, reach = [0], [0]  # reach: settled plus the pending character, if any
    states = iter(prefix_states)
    for i in range(1, n + 1):
        c, pending = (len(text), False) if i == n else next(states)
        c = max(settled[-1], c)
        settled.append(c)
        reach.append(min(len(text), c + 1) if pending else c)
    spans: list[tuple[int, int]] = []
    for i, tok in enumerate(ids):
        if tok in special_ids:  # empty, after the text before it (a final one: at the end)
            spans.append((settled[i + 1], settled[i + 1]))
            continue
        start = settled[i]
        j = i  # a token that adds nothing visible takes the span of the next one that does
        while j < n and reach[j + 1] == start and ids[j] not in special_ids:
            j += 1
        end = reach[j + 1] if j < n else start
        spans.append((start, max(start, end)))
    return spans


def spans_from_ids(decode, ids: list[int], special_ids: set[int]) -> tuple[str, list[tuple[int, int]]]:
    """Return the decoded text of `ids` and one (start, end) character span per id, in time
    linear in len(ids).

    `decode(ids) -> str` must skip special tokens; ids in `special_ids` get empty spans.
    """
    text = decode(ids)
    return text, _spans(text, ids, special_ids, _incremental_settled(decode, ids, text))


def spans_by_full_prefixes(decode, ids: list[int], special_ids: set[int]
                           ) -> tuple[str, list[tuple[int, int]]]:
    """The same spans by decoding every prefix from the start: quadratic, the reference."""
    text = decode(ids)
    states = (_settled(decode(ids[:i]), text) for i in range(1, len(ids)))
    return text, _spans(text, ids, special_ids, states)
