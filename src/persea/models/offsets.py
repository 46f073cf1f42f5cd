"""Character spans of generated token ids.

Re-tokenising a generated text does not always give back the ids the model produced, so the
spans are read off the ids themselves: decode every prefix of the ids and note how many
characters of the final text are settled after each token. A byte-level token that ends in
the middle of a multi-byte character settles nothing; it and the tokens up to the one that
completes the character all get that character's span.
"""

from __future__ import annotations

_REPLACEMENT = "\ufffd"


def _settled(prefix: str, text: str) -> int:
    """How many leading characters of `text` the decoded `prefix` has fixed for good."""
    c = len(prefix)
    while c > 0 and prefix[c - 1] == _REPLACEMENT and not (
        c <= len(text) and text[c - 1] == _REPLACEMENT
    ):
        c -= 1
    if text.startswith(prefix[:c]):
        return c
    n = 0
    for a, b in zip(prefix, text):
        if a != b:
            break
        n += 1
    return n


def spans_from_ids(decode, ids: list[int], special_ids: set[int]) -> tuple[str, list[tuple[int, int]]]:
    """Return the decoded text of `ids` and one (start, end) character span per id.

    `decode(ids) -> str` must skip special tokens; ids in `special_ids` get empty spans.
    """
    text = decode(ids)
    settled = [0]
    for i in range(1, len(ids) + 1):
        settled.append(max(settled[-1], _settled(decode(ids[:i]), text)))
    spans: list[tuple[int, int]] = []
    for i, tok in enumerate(ids):
        start = settled[i]
        if tok in special_ids:
            spans.append((start, start))
            continue
        j = i
        while j < len(ids) and settled[j + 1] == start and ids[j] not in special_ids:
            j += 1
        end = settled[j + 1] if j < len(ids) else start
        spans.append((start, max(start, end)))
    return text, spans
