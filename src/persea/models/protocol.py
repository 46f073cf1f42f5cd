"""The one small protocol every stage uses to talk to a model, whatever it is.

A `Trace` is what a model says about one piece of text, token by token: the ids, the
character span of each token in the text, the log-probability of each chosen token, and the
top-k alternatives at each position. Generation and scoring return the same shape, so a
harvest of generated answers and a harvest of given answers are stored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class Trace:
    """One response (or scored continuation) from one model.

    `spans[i] = (start, end)` is the character range of token i in `text`. A token that holds
    only part of a character (a byte of a multi-byte UTF-8 character in byte-level BPE) gets
    the span of the whole character, so spans may overlap; a special token (end of turn)
    gets an empty span at its position.

    For a black-box model the ids are indices into `vocab` (token strings seen in this
    trace), because the endpoint's own ids are not known.
    """

    text: str
    token_ids: list[int]
    spans: list[tuple[int, int]]
    logprobs: list[float]
    topk_ids: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))
    topk_logprobs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    vocab: list[str] | None = None

    def __len__(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class LanguageModel(Protocol):
    """What harvest, distillation and evaluation need from any model."""

    name: str

    @property
    def fingerprint(self) -> str:
        """A SHA-256 that changes whenever the weights (or the endpoint's identity) change."""

    @property
    def tokenizer_fingerprint(self) -> str:
        """A SHA-256 of the tokenizer: vocabulary, merges, normaliser and chat template."""

    @property
    def vocab_size(self) -> int | None:
        """Size of the model's output vocabulary; None for a black-box endpoint."""

    def generate(self, prompts: list[str], max_new_tokens: int, top_k: int = 0) -> list[Trace]:
        """Greedy responses to user prompts (batched), each with its top-k per position."""

    def score(self, prompts: list[str], continuations: list[str], top_k: int = 0) -> list[Trace]:
        """Log-probabilities of given continuations after the prompts (teacher forcing)."""

    def tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of `text` and the character span of each."""
