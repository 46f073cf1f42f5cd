"""An OpenAI-compatible endpoint as a black-box teacher.

Only text comes back for sure; log-probabilities come when the endpoint gives them
(`logprobs=true`, up to 20 alternatives per position in the OpenAI API). The endpoint's token
ids are unknown, so each trace carries its own small vocabulary of token strings and the ids
index into it; character spans are read off the tokens' bytes, as for any other model.
"""

from __future__ import annotations

import os

import numpy as np

from persea.errors import PerseaError
from persea.models.fingerprint import fingerprint_text
from persea.models.offsets import spans_from_ids
from persea.models.protocol import Trace

MAX_TOP_LOGPROBS = 20  # the OpenAI API's limit


class _LocalVocab:
    def __init__(self) -> None:
        self.strings: list[str] = []
        self.raw: list[bytes] = []
        self._index: dict[tuple[str, bytes], int] = {}

    def id(self, token: str, raw: bytes | None) -> int:
        raw = raw if raw is not None else token.encode()
        key = (token, raw)
        if key not in self._index:
            self._index[key] = len(self.strings)
            self.strings.append(token)
            self.raw.append(raw)
        return self._index[key]

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.raw[i] for i in ids).decode("utf-8", errors="replace")


def _to_trace(content: str, entries, top_k: int) -> Trace:
    if not entries:
        return Trace(text=content, token_ids=[], spans=[], logprobs=[], vocab=[])
    vocab = _LocalVocab()
    ids, chosen, topk_ids, topk_lps = [], [], [], []
    k = min(top_k, MAX_TOP_LOGPROBS)
    for e in entries:
        raw = bytes(e.bytes) if getattr(e, "bytes", None) is not None else None
        ids.append(vocab.id(e.token, raw))
        chosen.append(float(e.logprob))
        if k:
            alts = sorted(e.top_logprobs or [], key=lambda a: -a.logprob)[:k]
            row_ids = [vocab.id(a.token, bytes(a.bytes) if a.bytes is not None else None)
                       for a in alts]
            row_lps = [float(a.logprob) for a in alts]
            pad = k - len(alts)  # an endpoint may return fewer than asked: -inf marks absent
            topk_ids.append(row_ids + [0] * pad)
            topk_lps.append(row_lps + [float("-inf")] * pad)
    text, spans = spans_from_ids(vocab.decode, ids, set())
    trace = Trace(text=text, token_ids=ids, spans=spans, logprobs=chosen, vocab=vocab.strings)
    if k:
        trace.topk_ids = np.asarray(topk_ids, dtype=np.int64)
        trace.topk_logprobs = np.asarray(topk_lps, dtype=np.float32)
    return trace


class EndpointModel:
    """A model behind `POST {base_url}/chat/completions`, asked greedily (temperature 0)."""

    def __init__(self, name: str, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout: float = 60.0, max_retries: int = 2):
        from openai import OpenAI

        self.name = name
        self.base_url = base_url.rstrip("/")
        self.model = model
        key = os.environ.get(api_key_env) or "none"
        self.client = OpenAI(base_url=self.base_url, api_key=key, timeout=timeout,
                             max_retries=max_retries)

    @property
    def fingerprint(self) -> str:
        return fingerprint_text("endpoint", self.base_url, self.model)

    @property
    def tokenizer_fingerprint(self) -> str:
        return fingerprint_text("endpoint-tokens", self.base_url, self.model)

    @property
    def vocab_size(self) -> None:
        return None

    def generate(self, prompts: list[str], max_new_tokens: int, top_k: int = 0) -> list[Trace]:
        import openai

        traces = []
        for prompt in prompts:
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}],
                    max_tokens=max_new_tokens, temperature=0.0, logprobs=True,
                    top_logprobs=min(top_k, MAX_TOP_LOGPROBS) or None)
            except openai.APIConnectionError:
                raise PerseaError(f"teacher {self.name!r}: cannot reach endpoint "
                                  f"{self.base_url}") from None
            except openai.APIStatusError as err:
                body = err.body if isinstance(err.body, dict) else {}
                detail = body.get("error", body).get("message") if isinstance(
                    body.get("error", body), dict) else None
                raise PerseaError(f"teacher {self.name!r}: endpoint {self.base_url} answered "
                                  f"{err.status_code}: {detail or err.message}") from None
            choice = resp.choices[0]
            entries = choice.logprobs.content if choice.logprobs is not None else None
            traces.append(_to_trace(choice.message.content or "", entries, top_k))
        return traces

    def score(self, prompts: list[str], continuations: list[str], top_k: int = 0) -> list[Trace]:
        raise PerseaError(f"teacher {self.name!r}: scoring a given continuation needs the "
                          "model's own log-probabilities of the prompt, which a chat endpoint "
                          "does not return; use its generated responses instead")

    def tokenize(self, text: str):
        raise PerseaError(f"teacher {self.name!r}: a black-box endpoint has no tokenizer "
                          "to call; its token strings come with each response")
