"""What each token id *is*, as bytes of text, for any Hugging Face fast tokenizer.

Cross-tokenizer distillation matches a teacher's candidate tokens to the student's
vocabulary by exact string. Token strings as stored in a vocabulary are not text: byte-level
BPE writes bytes as printable stand-ins (`Ġ` for a space), SentencePiece writes `▁` for a
space and `<0xE2>` for a raw byte, WordPiece writes `##` for a continuation. This module
turns every id into the bytes it contributes to decoded text, so that `Ġthe`, `▁the` and
` the` all become `b" the"` and match. Special tokens have no text and map to None.

Equal bytes are not always enough: a tokenizer may emit a token only in some contexts. A
word-level tokenizer's ` go` is the whole word "go", emitted only when no letter follows;
`context_bound` finds such ids, and persea.align.carry uses it so that a teacher's ` go`
(the start of ` gofe`, say) is not read as the student's whole word.
"""

from __future__ import annotations

import json
import re
import weakref
from functools import lru_cache

import numpy as np

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def _byte_level_decoding() -> dict[str, int]:
    """The inverse of GPT-2's bytes-to-printable-characters table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _decoder_types(tokenizer) -> tuple[set[str], str]:
    """Decoder component types, and the Metaspace replacement character if any."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    parts = spec.get("decoders", [spec]) if spec.get("type") == "Sequence" else [spec]
    types = {p.get("type") for p in parts if p}
    replacement = next((p.get("replacement", "▁") for p in parts if p.get("type") == "Metaspace"),
                       "▁")
    return types, replacement


def special_ids(tokenizer) -> set[int]:
    """Ids that decode to nothing with skip_special_tokens: the named special tokens and
    every added token marked special (chat-template markers such as <|im_start|>)."""
    return set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special}


def token_bytes(tokenizer) -> list[bytes | None]:
    """For every id `0 .. len(tokenizer)-1`: the bytes it adds to decoded text, or None for
    special tokens. Ids missing from the vocabulary (padding rows) are None as well."""
    types, metaspace = _decoder_types(tokenizer)
    byte_level = "ByteLevel" in types
    table = _byte_level_decoding()
    skip = special_ids(tokenizer)
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    out: list[bytes | None] = []
    for i, piece in enumerate(vocab):
        if piece is None or i in skip:
            out.append(None)
            continue
        if byte_level and all(ch in table for ch in piece):
            out.append(bytes(table[ch] for ch in piece))
            continue
        m = _BYTE_PIECE.match(piece)
        if m and "ByteFallback" in types:
            out.append(bytes([int(m.group(1), 16)]))
            continue
        if "Metaspace" in types:
            piece = piece.replace(metaspace, " ")
        if "WordPiece" in types:
            piece = piece[2:] if piece.startswith("##") else " " + piece
        out.append(piece.encode("utf-8"))
    return out


def vocab_map(source: list[bytes | None], target: list[bytes | None],
              specials: dict[int, int] | None = None) -> list[int]:
    """For every source id, the target id with exactly the same bytes, or -1.

    `specials` maps special source ids to target ids by role (end of turn to end of turn),
    since special tokens have no text to match on. When several target ids share the same
    bytes (rare: a duplicate added token) the lowest id is used.
    """
    index: dict[bytes, int] = {}
    for tid, b in enumerate(target):
        if b is not None and b not in index:
            index[b] = tid
    mapping = [index.get(b, -1) if b is not None else -1 for b in source]
    for s, t in (specials or {}).items():
        if 0 <= s < len(mapping):
            mapping[s] = t
    return mapping


# Letters appended to a token's text to ask whether the tokenizer still emits that token
# before a letter. An uppercase and a rare lowercase letter first: a byte-level BPE token
# almost never merges with them, so such a token is settled by one probe.
PROBE_LETTERS = ("X", "q", "a")

_bound_cache: "weakref.WeakKeyDictionary[object, np.ndarray]" = weakref.WeakKeyDictionary()


def context_bound(tokenizer) -> np.ndarray:
    """`[len(tokenizer)]` booleans: True for the ids the tokenizer emits only where no letter
    follows them.

    An id is context-bound when its text ends in a letter, the tokenizer encodes that text
    alone as exactly this one id, and with any of `PROBE_LETTERS` appended the encoding
    starts with a different id. The word tokens of persea's words-and-characters student
    tokenizer are (` go` stands for "go" and a non-letter: ` goa` is spelt); single
    characters and byte-level BPE tokens are not (` the` + `X` still starts with ` the`).
    Cached per tokenizer object: the probes encode a few short strings per id, and a
    word-level tokenizer's pre-tokenizer is slow."""
    try:
        return _bound_cache[tokenizer]
    except (KeyError, TypeError):
        pass
    out = np.zeros(len(tokenizer), bool)
    texts: dict[int, str] = {}
    for i, b in enumerate(token_bytes(tokenizer)):
        try:
            text = b.decode("utf-8") if b is not None else ""
        except UnicodeDecodeError:  # a byte piece of a multi-byte character
            continue
        if text and text[-1].isalpha():
            texts[i] = text

    def first_ids(ids: list[int], suffix: str) -> list[list[int]]:
        return tokenizer([texts[i] + suffix for i in ids], add_special_tokens=False)["input_ids"]

    # the first probe settles most ids; only those it does not go on
    left = list(texts)
    if left:
        left = [i for i, enc in zip(left, first_ids(left, PROBE_LETTERS[0]))
                if not enc or enc[0] != i]
    if left:  # the tokenizer must produce the id for its own text, or the probes say nothing
        left = [i for i, enc in zip(left, first_ids(left, "")) if enc == [i]]
    for letter in PROBE_LETTERS[1:]:
        if not left:
            break
        left = [i for i, enc in zip(left, first_ids(left, letter)) if not enc or enc[0] != i]
    out[left] = True
    out.flags.writeable = False  # shared through the cache
    try:
        _bound_cache[tokenizer] = out
    except TypeError:  # an object that takes no weak reference: just not cached
        pass
    return out
