"""The student: its own tokenizer (trained on the harvest text) and its own architecture.

By default a byte-level BPE tokenizer in the Llama 3 chat format and a small
Llama-architecture model; both sizes come from the project file's `distill.student`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from persea.cache import reader
from persea.distill.tokenizer import train_bpe, wrap
from persea.errors import PerseaError
from persea.models.templates import LLAMA


def harvest_corpus(cache: Path) -> list[str]:
    """Every prompt and teacher response in a harvest cache, and the chat template's role
    names: what the student tokenizer is trained on."""
    return reader.corpus(cache) + ["user\n", "assistant\n"] * 100


def train_student_tokenizer(corpus: list[str], vocab_size: int):
    return wrap(train_bpe(corpus, LLAMA, vocab_size=vocab_size), LLAMA)


def check_encodes(tokenizer, texts: list[str], where: str) -> None:
    """A student tokenizer must encode every harvested text without unknown tokens and
    decode it back, or the student could not learn from it."""
    unk = tokenizer.unk_token_id
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        back = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if (unk is not None and unk in ids) or back != text:
            raise PerseaError(f"{where}: the student tokenizer cannot encode harvested text "
                              f"{text[:40]!r} (it decodes back as {back[:40]!r}); use a "
                              "byte-level tokenizer or retrain it on the harvest text")


def build_student_model(tokenizer, hidden: int, layers: int, heads: int, intermediate: int,
                        seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        intermediate_size=intermediate, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model
