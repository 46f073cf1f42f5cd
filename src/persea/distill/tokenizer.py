"""The student's tokenizer trainers, wrapped for transformers with the chat template of its
`ChatFormat`. Two kinds:

* **byte-level BPE** (`train_bpe`): text is first split GPT-style (letters, single digits,
  punctuation, whitespace), each piece is mapped to bytes, and BPE merges are learned on top.
* **words and characters** (`train_words_and_chars`): every word (a run of ASCII letters)
  that the corpus holds at least `min_count` times is one token, with and without a leading
  space; everything else, rare words included, is spelt one byte at a time. Frequent words
  (the fixed wording of prompts, names a model must recall) cost one position each, while
  a random string keeps one token per letter, which is what reversing or counting letters
  needs. BPE cannot give both: its merges apply inside rare words too. With
  `split_compounds`, a frequent word that is other kept words written together (`bita` =
  `bi` + `ta`) is not kept itself: it is written as its parts, so what the student learns
  about a part (where `bi` sorts) holds for every word made of it.

Both are lossless: any string encodes and decodes back exactly, with no unknown token.
Every special token of the format is a single added token and takes the first ids; the
end-of-turn token doubles as `eos_token`, so that generation stops where a reply ends.
"""

from __future__ import annotations

import re
from collections import Counter

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from persea.models.templates import ChatFormat

# Pre-tokenization of the BPE tokenizer: a letter run (with one leading space), one digit,
# a punctuation run (with one leading space), or whitespace. Digits stay single, as in Qwen.
_BPE_SPLIT = r" ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

UNK = "<unk>"
MAX_LENGTH = 256  # the longest toy-world conversation is well under this in every tokenizer


def special_tokens(fmt: ChatFormat, with_unk: bool = False) -> list[str]:
    """The format's special tokens in order, plus `<unk>` when the tokenizer needs one."""
    specials = list(fmt.special_tokens)
    if with_unk and UNK not in specials:
        specials.append(UNK)
    return specials


def train_bpe(corpus: list[str], fmt: ChatFormat, vocab_size: int = 1000) -> Tokenizer:
    """A byte-level BPE tokenizer; special tokens take the first ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_BPE_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens(fmt),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


_WORD = re.compile(r"[A-Za-z]+")


def frequent_words(corpus: list[str], min_count: int, limit: int) -> list[str]:
    """Words of two letters or more seen at least `min_count` times, the `limit` most
    frequent (ties broken alphabetically, so the same corpus gives the same list)."""
    counts = Counter(w for line in corpus for w in _WORD.findall(line) if len(w) > 1)
    ranked = sorted((w for w, n in counts.items() if n >= min_count),
                    key=lambda w: (-counts[w], w))
    return ranked[:max(0, limit)]


def _splits_into(word: str, parts: set[str]) -> bool:
    """Whether `word` is two or more of `parts` written together."""
    # ends[i]: word[:i] is one or more parts; a whole-word part alone does not count
    ends = [True] + [False] * len(word)
    for i in range(1, len(word) + 1):
        ends[i] = any(ends[j] and word[j:i] in parts for j in range(i) if (j, i) != (0, len(word)))
    return ends[len(word)]


def drop_compounds(words: list[str]) -> list[str]:
    """`words` without those that are two or more shorter kept words written together, in the
    same order. Shorter words are decided first, so a part is always a kept word."""
    kept: set[str] = set()
    for w in sorted(words, key=lambda w: (len(w), w)):
        if not _splits_into(w, kept):
            kept.add(w)
    return [w for w in words if w in kept]


def train_words_and_chars(corpus: list[str], fmt: ChatFormat, vocab_size: int = 2000,
                          min_count: int = 4, split_compounds: bool = False) -> Tokenizer:
    """Special tokens, the 256 byte symbols, then the corpus's frequent words (each as
    `word` and as ` word`), as many as fit in `vocab_size`.

    Pre-tokenization does the work: a known word standing alone (not inside a longer run of
    letters), with its leading space if it has one, is one piece; any other character is a
    piece of its own. The pieces are mapped to byte symbols, and a word-level model gives
    each piece its id. With `split_compounds`, words made of other kept words are dropped
    (`drop_compounds`), and a standalone run of letters that is kept words written together
    is one piece, then cut into them.
    """
    specials = special_tokens(fmt, with_unk=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    room = (vocab_size - len(specials) - len(alphabet)) // 2
    words = frequent_words(corpus, min_count, room)
    if split_compounds:
        words = drop_compounds(words)
    words = sorted(words, key=lambda w: (-len(w), w))
    vocab = {s: i for i, s in enumerate(specials)}
    for symbol in alphabet:
        vocab.setdefault(symbol, len(vocab))
    for w in words:
        vocab.setdefault(w, len(vocab))
        vocab.setdefault("\u0120" + w, len(vocab))  # "Ġ": the byte-level symbol of a space
    known = "|".join(words)  # longest first, so no word stops at a shorter one's end
    repeat = "+" if split_compounds else ""
    text_split = (rf"(?: |(?<![A-Za-z]))(?:{known}){repeat}(?![A-Za-z])|[\s\S]" if words
                  else r"[\s\S]")
    symbol_split = "\u0120?(?:" + known + r")|[\s\S]" if words else r"[\s\S]"
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(text_split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        pre_tokenizers.Split(Regex(symbol_split), behavior="isolated"),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def wrap(tok: Tokenizer, fmt: ChatFormat) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around `tok`, carrying the family's chat template.

    Nothing is added to encoded text automatically: Gemma's template writes `<bos>` itself.
    Padding is on the left, which is what batched generation needs.
    """
    vocab = tok.get_vocab()
    missing = [s for s in fmt.special_tokens if s not in vocab]
    if missing:
        raise ValueError(f"special tokens missing from the {fmt.family} vocabulary: {missing}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=fmt.bos,
        eos_token=fmt.end_of_turn,
        pad_token=fmt.pad,
        unk_token=UNK if UNK in vocab else None,
        chat_template=fmt.template,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=MAX_LENGTH,
    )
