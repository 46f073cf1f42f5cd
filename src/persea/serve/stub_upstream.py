"""A tiny OpenAI-shaped upstream, as a bare ASGI app: the gateway's tests and its overhead
benchmark (bench/gateway_overhead.py) both serve through it.

It answers `POST /v1/chat/completions` and `POST /v1/completions` with a canned reply, one
word per token, whole or streamed, always with `usage` (streams: in a last chunk when
`stream_options.include_usage` is set, as vLLM does). Faults on demand: the next requests
refused with a status (`fail_next`, `fail_status`), a delay before answering, a stream that
breaks off after some chunks (`cut_after`). Bare ASGI and no validation, so that
when the benchmark calls it directly it costs as little as a server can, and what the
gateway adds over it is what is measured. `LiveServer` runs any ASGI app under a real uvicorn
on a free loopback port in a background thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import uvicorn

REPLY = "Hello from the stub upstream , one word per token ."


class StubUpstream:
    def __init__(self, reply: str = REPLY, token_delay: float = 0.0):
        self.words = reply.split(" ")
        self.token_delay = token_delay
        self.requests: list[dict] = []  # bodies as received
        self.fail_next = 0  # answer this many requests with `fail_status`
        self.fail_status = 500
        self.delay = 0.0  # seconds before answering (whole or first chunk)
        self.cut_after: int | None = None  # a stream breaks off after this many chunks

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] != "POST" or path not in ("/v1/chat/completions", "/v1/completions"):
            return await _send(send, 404, {"error": {"message": "no such route",
                                                     "type": "invalid_request_error",
                                                     "param": None, "code": None}})
        req = json.loads(body)
        self.requests.append(req)
        if self.fail_next:
            self.fail_next -= 1
            return await _send(send, self.fail_status, {"error": {
                "message": "stub failure", "type": "server_error", "param": None,
                "code": None}})
        if self.delay:
            await asyncio.sleep(self.delay)
        chat = path == "/v1/chat/completions"
        n = int(req.get("n") or 1)
        words = self.words[:int(req.get("max_tokens") or len(self.words))]
        finish = "length" if len(words) < len(self.words) else "stop"
        prompt_tokens = _count_prompt(req)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words) * n,
                 "total_tokens": prompt_tokens + len(words) * n}
        if not req.get("stream"):
            text = " ".join(words)
            choices = [{"index": i, "finish_reason": finish, "logprobs": None,
                        **({"message": {"role": "assistant", "content": text}} if chat
                           else {"text": text})} for i in range(n)]
            return await _send(send, 200, {"id": "stub-1", "object": "chat.completion" if chat
                                           else "text_completion", "created": 0,
                                           "model": req.get("model"), "choices": choices,
                                           "usage": usage})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        kind = "chat.completion.chunk" if chat else "text_completion"

        async def event(choices, usage=None):
            chunk = {"id": "stub-1", "object": kind, "created": 0, "model": req.get("model"),
                     "choices": choices, "usage": usage}
            await send({"type": "http.response.body", "more_body": True,
                        "body": b"data: " + json.dumps(chunk).encode() + b"\n\n"})

        for t, word in enumerate(words):
            if self.cut_after is not None and t >= self.cut_after:
                raise ConnectionAbortedError("stub stream cut")  # uvicorn drops the connection
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            piece = word if t == 0 else " " + word
            last = t == len(words) - 1
            await event([{"index": i, "finish_reason": finish if last else None,
                          **({"delta": {"content": piece}} if chat else {"text": piece})}
                         for i in range(n)])
        if (req.get("stream_options") or {}).get("include_usage"):
            await event([], usage)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def _count_prompt(req: dict) -> int:
    if "messages" in req:
        return sum(len(str(m.get("content", "")).split()) + 3 for m in req["messages"])
    return len(str(req.get("prompt", "")).split())


async def _send(send, status: int, obj: dict) -> None:
    body = json.dumps(obj).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real uvicorn serving `app` on 127.0.0.1 in a daemon thread, until `stop()`."""

    def __init__(self, app, **config):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                             access_log=False, **config)
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 30.0) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
