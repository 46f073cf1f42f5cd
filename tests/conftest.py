"""Shared fixtures: tiny models the tests build themselves, in seconds, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.databases import accounts, clock, db_url, migrated_url  # noqa: F401 - fixtures

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_tiny_qwen(directory, vocab_size: int = 300, seed: int = 0):
    """An untrained Qwen3 with a byte-level BPE tokenizer and a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from persea.toyworld import make_mixture
    from persea.models.templates import QWEN

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [f"{i.prompt} {i.answer} héllo wörld ✓ 日本" for i in make_mixture("train", 30)]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(QWEN.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=QWEN.end_of_turn,
                                   pad_token=QWEN.pad)
    fast.chat_template = QWEN.template
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=16, max_position_embeddings=256,
                      eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    model = Qwen3ForCausalLM(cfg)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    # a model card that declares the licence, as a hub model's does (persea.licences)
    (Path(directory) / "README.md").write_text(
        "---\nlicense: apache-2.0\n---\n# tiny-qwen\n\nAn untrained test model.\n",
        encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_qwen(tmp_path_factory.mktemp("tiny-qwen"))
