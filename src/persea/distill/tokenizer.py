"""The student's tokenizer trainer: byte-level BPE learned on the harvest text, wrapped for
transformers with the chat template of its `ChatFormat`.

Text is first split GPT-style (letters, single digits, punctuation, whitespace), each piece
is mapped to bytes, and BPE merges are learned on top: any string encodes and decodes back
exactly, with no unknown token. Every special token of the format is a single added token
and takes the first ids; the end-of-turn token doubles as `eos_token`, so that generation
stops where a reply ends.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
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
