"""An upstream OpenAI-compatible server (vLLM, another persea gateway, ...) as a backend.

The HTTP client is aiohttp, not httpx: the client sits on every request's hot path, and on
this project's machines httpx's async pool answered about 800 requests/s against the stub
upstream at 50 concurrent requests where aiohttp answered about 6,900 (docs/benchmarks.md,
"Gateway overhead").

The gateway keeps keys, limits and metering; the upstream only generates. Requests are
rebuilt from the validated fields (never passed through raw), so every bound the gateway
enforces holds upstream too. The upstream's own `usage` is what gets charged; streamed
requests always ask it for the usage chunk. Without a tokenizer for the upstream model, the
reservation counts one token per UTF-8 byte of the prompt plus a few per message: an upper
bound for byte-level tokenizers, so the reservation never falls short; settling uses the
upstream's exact counts.
"""

from __future__ import annotations

import json
import logging
from typing import AsyncIterator

import aiohttp

from persea.serve.backends.base import BackendError, Choice, Piece, Prepared, Prompt, \
    Reported, Result, Sampling, TokenLogprob

log = logging.getLogger("persea.serve")

PER_MESSAGE_OVERHEAD = 8  # role markers and separators a chat template adds per message


class UpstreamBackend:
    """Forwards to `{base_url}/chat/completions` or `/completions` over kept-alive
    connections."""

    def __init__(self, name: str, base_url: str, *, upstream_model: str | None = None,
                 api_key: str | None = None, timeout: float = 120.0,
                 max_connections: int = 1024):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.upstream_model = upstream_model or name
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        # connections open to the upstream at once; a request past it waits for one. A
        # stream holds its connection to the end, so this caps concurrent streams: at 64,
        # 1,000 slow streams went through in 16 waves (bench/gateway_streams.py)
        self.max_connections = max_connections
        self._client: aiohttp.ClientSession | None = None
        self.ready = True

    async def start(self) -> None:
        if self._client is None:
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self._timeout, sock_connect=5.0),
                headers=self._headers)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def prepare(self, prompt: Prompt) -> Prepared:
        if prompt.kind == "text":
            tokens = len(prompt.text.encode()) + PER_MESSAGE_OVERHEAD
        else:
            tokens = sum(len(c.encode()) + PER_MESSAGE_OVERHEAD for _, c in prompt.messages)
        return Prepared(prompt=prompt, prompt_tokens=tokens + PER_MESSAGE_OVERHEAD,
                        max_new_tokens=None)

    def _body(self, prepared: Prepared, s: Sampling, stream: bool) -> tuple[str, dict]:
        p = prepared.prompt
        body: dict = {"model": self.upstream_model, "max_tokens": s.max_tokens, "n": s.n,
                      "temperature": s.temperature, "top_p": s.top_p}
        if s.stop:
            body["stop"] = list(s.stop)
        if s.seed is not None:
            body["seed"] = s.seed
        if p.kind == "chat":
            path = "/chat/completions"
            body["messages"] = [{"role": r, "content": c} for r, c in p.messages]
            if s.top_logprobs is not None:
                body["logprobs"] = True
                if s.top_logprobs:
                    body["top_logprobs"] = s.top_logprobs
        else:
            path = "/completions"
            body["prompt"] = p.text
            if s.top_logprobs is not None:
                body["logprobs"] = s.top_logprobs
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return path, body

    async def complete(self, prepared: Prepared, sampling: Sampling) -> Result:
        if self._client is None:
            await self.start()
        path, body = self._body(prepared, sampling, stream=False)
        try:
            async with self._client.post(self.base_url + path, json=body) as r:
                if r.status != 200:
                    raise BackendError(f"upstream for {self.name} answered {r.status}",
                                       status=r.status)
                data = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise BackendError(f"upstream for {self.name} unreachable "
                               f"({type(err).__name__})") from None
        except ValueError:
            raise BackendError(f"upstream for {self.name} answered malformed JSON") from None
        try:
            choices = [_choice(c, prepared.prompt.kind) for c in data["choices"]]
        except (KeyError, TypeError):
            raise BackendError(f"upstream for {self.name} answered malformed JSON") from None
        usage = data.get("usage") or {}
        completion = usage.get("completion_tokens")
        if completion is None:  # no usage: count by our own upper bound
            completion = sum(c.tokens for c in choices)
        return Result(choices=sorted(choices, key=lambda c: c.index),
                      prompt_tokens=usage.get("prompt_tokens", prepared.prompt_tokens),
                      completion_tokens=int(completion))

    async def stream(self, prepared: Prepared, sampling: Sampling
                     ) -> AsyncIterator[Piece | Reported]:
        if self._client is None:
            await self.start()
        path, body = self._body(prepared, sampling, stream=True)
        try:
            async with self._client.post(self.base_url + path, json=body) as r:
                if r.status != 200:
                    raise BackendError(f"upstream for {self.name} answered {r.status}",
                                       status=r.status)
                async for raw in r.content:
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise BackendError(f"upstream for {self.name} sent a malformed "
                                           "chunk") from None
                    for piece in _pieces(chunk, prepared.prompt.kind):
                        yield piece
        except (aiohttp.ClientError, TimeoutError) as err:
            raise BackendError(f"upstream for {self.name} failed mid-request "
                               f"({type(err).__name__})") from None


def _logprobs(c: dict, kind: str) -> list[TokenLogprob] | None:
    lp = c.get("logprobs")
    if not lp:
        return None
    if kind == "chat":
        return [TokenLogprob(t["token"], t["logprob"],
                             [(x["token"], x["logprob"]) for x in t.get("top_logprobs") or []])
                for t in lp.get("content") or []]
    tops = lp.get("top_logprobs") or [None] * len(lp.get("tokens", []))
    return [TokenLogprob(t, v, sorted((top or {}).items(), key=lambda kv: -kv[1]))
            for t, v, top in zip(lp.get("tokens", []), lp.get("token_logprobs", []), tops)]


def _choice(c: dict, kind: str) -> Choice:
    text = (c["message"].get("content") or "") if kind == "chat" else c["text"]
    logprobs = _logprobs(c, kind)
    tokens = len(logprobs) if logprobs else max(1, len(text.encode())) if text else 0
    return Choice(index=int(c.get("index", 0)), text=text, finish_reason=c.get("finish_reason"),
                  tokens=tokens, logprobs=logprobs)


def _pieces(chunk: dict, kind: str):
    usage = chunk.get("usage")
    for c in chunk.get("choices") or []:
        text = ((c.get("delta") or {}).get("content") or "") if kind == "chat" \
            else c.get("text") or ""
        logprobs = _logprobs(c, kind)
        if not text and not c.get("finish_reason") and not logprobs:
            continue
        # One chunk is about one token; an upstream's usage chunk corrects the count.
        yield Piece(index=int(c.get("index", 0)), text=text,
                    tokens=len(logprobs) if logprobs else (1 if text else 0),
                    finish_reason=c.get("finish_reason"), logprobs=logprobs)
    if usage:
        yield Reported(int(usage.get("prompt_tokens", 0)),
                       int(usage.get("completion_tokens", 0)))

