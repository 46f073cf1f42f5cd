"""Train the three tokenizers of the built-in teachers on toy-world text.

Each stands in for the tokenizer of one model family, and they differ the way the real
ones do, so that a distiller meets three genuinely different vocabularies:

* **byte-level BPE** (Qwen-like): the student's own trainer (`persea.distill.tokenizer`):
  GPT-style pre-splitting, bytes, BPE merges on top; no unknown token.
* **Unigram, SentencePiece-style** (Gemma-like): spaces become the `▁` marker (Metaspace,
  no dummy prefix, as in Gemma) and newlines are their own pieces; a Unigram model learns
  the pieces, and the 256 `<0xXX>` byte pieces are added so that a character never seen in
  training falls back to its UTF-8 bytes instead of `<unk>`.
* **character-level** (standing in for gpt-oss, whose real tokenizer is a huge BPE: here
  the point is a vocabulary as unlike the others as possible): one token per character of
  printable ASCII plus newline; any other character encodes as `<unk>`.

Every special token of the family's `ChatFormat` is a single added token. The end-of-turn
token doubles as the tokenizer's `eos_token`, so that generation stops where a reply ends,
and the chat template travels in the saved tokenizer config.
"""

from __future__ import annotations

import json
import string
from typing import Callable

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from persea.distill.tokenizer import UNK, special_tokens, train_bpe, wrap
from persea.models.templates import ChatFormat
from persea.toyworld.score import items_up_to
from persea.toyworld.skills import SKILLS

# Words that the chat templates put around messages, so that they get pieces of their own.
_ROLE_WORDS = ("system", "user", "assistant", "model", "final", "analysis")


def toy_corpus(per_skill: int = 5000, seed: int = 0) -> list[str]:
    """Prompts and answers of the train split of every skill, one string each, plus the
    role words of the chat templates (each followed by a newline, as the templates write
    them) often enough to become tokens of their own.

    Skills with fewer than `per_skill` train items (kb, convert) give all they have. At the
    default size the corpus is about 0.8 MB, small enough for Unigram training (~5 s).
    """
    lines: list[str] = [f"{role}\n" for role in _ROLE_WORDS for _ in range(200)]
    for skill in SKILLS:
        for item in items_up_to(skill, "train", per_skill, seed):
            lines.append(item.prompt)
            lines.append(item.answer)
    return lines


def train_unigram(corpus: list[str], fmt: ChatFormat, vocab_size: int = 700) -> Tokenizer:
    """A Unigram tokenizer over `▁`-marked words with byte fallback.

    `vocab_size` counts everything: the learned pieces, the 256 byte pieces and the special
    tokens.
    """
    specials = special_tokens(fmt, with_unk=True)
    learned = vocab_size - 256
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"),
    ])
    trainee = Tokenizer(models.Unigram())
    trainee.pre_tokenizer = pre
    trainer = trainers.UnigramTrainer(
        vocab_size=learned, special_tokens=specials, unk_token=UNK, max_piece_length=12,
        show_progress=False,
    )
    trainee.train_from_iterator(corpus, trainer=trainer)

    # Rebuild the model with byte pieces appended (scored below every learned piece) and
    # byte fallback on: the trainer itself cannot add them.
    pieces = _unigram_scores(trainee)
    floor = min(s for _, s in pieces) - 10.0
    pieces += [(f"<0x{b:02X}>", floor) for b in range(256)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=specials.index(UNK), byte_fallback=True))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Sequence([
        decoders.ByteFallback(), decoders.Metaspace(replacement="▁", prepend_scheme="never"),
    ])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def _unigram_scores(tok: Tokenizer) -> list[tuple[str, float]]:
    """The (piece, log-probability) list of a trained Unigram tokenizer."""
    return [tuple(p) for p in json.loads(tok.to_str())["model"]["vocab"]]


def train_chars(corpus: list[str], fmt: ChatFormat) -> Tokenizer:
    """A character-level tokenizer: special tokens, `<unk>`, then one id per character.

    The characters are printable ASCII, newline and whatever else the corpus holds. Decoding
    joins the characters back with nothing in between, so text round-trips exactly.
    """
    specials = special_tokens(fmt, with_unk=True)
    chars = set(string.printable) - set("\t\r\x0b\x0c")
    for line in corpus:
        chars.update(line)
    vocab = {s: i for i, s in enumerate(specials)}
    for ch in sorted(chars):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


TRAINERS: dict[str, Callable[[list[str], ChatFormat], Tokenizer]] = {
    "byte-level BPE": train_bpe,
    "Unigram (SentencePiece-style)": train_unigram,
    "character-level": train_chars,
}


def build_tokenizer(kind: str, fmt: ChatFormat, corpus: list[str]) -> PreTrainedTokenizerFast:
    """Train the tokenizer of `kind` (a key of `TRAINERS`) and wrap it for transformers."""
    try:
        trainer = TRAINERS[kind]
    except KeyError:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of: "
                         f"{', '.join(TRAINERS)}") from None
    return wrap(trainer(corpus, fmt), fmt)
