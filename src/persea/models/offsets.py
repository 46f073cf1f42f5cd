"""Character spans of generated token ids.

Re-tokenising a generated text does not always give back the ids the model produced, so the
spans are read off the ids themselves: decode every prefix of the ids and note how many
characters of the final text are settled after each token. A byte-level token that ends in
the middle of a multi-byte character leaves that character pending (the prefix decodes with
a trailing U+FFFD in its place): the token's span reaches over the pending character, and a
token made only of such bytes gets exactly that character's span.

A text that itself holds U+FFFD is ambiguous to a method that only sees decoded strings (a
real U+FFFD looks like a pending character); there spans may come out wider than the
token's own characters, but every character is still covered by the tokens that make it.
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


def spans_from_ids(decode, ids: list[int], special_ids: set[int]) -> tuple[str, list[tuple[int, int]]]:
    """Return the decoded text of `ids` and one (start, end) character span per id.

    `decode(ids) -> str` must skip special tokens; ids in `special_ids` get empty spans.
    """
    text = decode(ids)
    n = len(ids)
    settled, reach = [0], [0]  # reach: settled plus the pending character, if any
    for i in range(1, n + 1):
        if i == n:
            c, pending = len(text), False
        else:
            c, pending = _settled(decode(ids[:i]), text)
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
    return text, spans
