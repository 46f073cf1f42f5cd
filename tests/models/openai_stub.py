"""A tiny OpenAI-compatible chat endpoint for tests: `POST /v1/chat/completions`.

It answers every prompt with one canned response, token by token, in the OpenAI wire shape,
log-probabilities included when asked (`logprobs`, `top_logprobs` up to 20). "é" comes as two
byte tokens, as OpenAI sends a character split by its tokenizer. Served by uvicorn on a
loopback port in a background thread (`serve`).
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class CannedToken:
    token: str
    raw: bytes
    logprob: float
    n_alternatives: int = 25  # how many alternatives the stub knows at this position


# "Café au lait!": the "é" (0xC3 0xA9) is split into two byte tokens.
CANNED = (
    CannedToken("Caf", b"Caf", -0.25),
    CannedToken("bytes:\\xc3", b"\xc3", -0.5, n_alternatives=3),
    CannedToken("bytes:\\xa9", b"\xa9", -0.01),
    CannedToken(" au", b" au", -1.5),
    CannedToken(" lait", b" lait", -0.75),
    CannedToken("!", b"!", -2.0, n_alternatives=1),
)
CANNED_TEXT = b"".join(t.raw for t in CANNED).decode()
_RAW = {t.token: list(t.raw) for t in CANNED}


def alternatives(position: int, chosen: CannedToken) -> list[tuple[str, float]]:
    """The alternatives the stub knows at a position, best first: the chosen token, then
    " alt<position>_<rank>" strings, each less likely than the one before."""
    alts = [(chosen.token, chosen.logprob)]
    for rank in range(1, chosen.n_alternatives):
        alts.append((f" alt{position}_{rank}", chosen.logprob - 0.5 * rank))
    return alts


@dataclass
class StubConfig:
    api_key: str | None = "sk-stub"  # None: any key is accepted
    bad_models: tuple[str, ...] = ("bad-model",)  # answered with a 400
    plain_models: tuple[str, ...] = ("plain",)  # never return log-probabilities
    requests: list[dict] = field(default_factory=list)  # every request body, as received


def _error(status: int, message: str, type_: str, code: str, param: str | None = None):
    return JSONResponse(status_code=status, content={
        "error": {"message": message, "type": type_, "param": param, "code": code}})


def make_app(config: StubConfig) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await request.json()
        config.requests.append(body)
        auth = request.headers.get("authorization", "")
        if config.api_key is not None and auth != f"Bearer {config.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_request_error",
                          "invalid_api_key")
        model = body.get("model")
        if model in config.bad_models:
            return _error(400, f"The model `{model}` does not exist or you do not have access "
                          "to it.", "invalid_request_error", "model_not_found", "model")
        top = body.get("top_logprobs") or 0
        if not 0 <= top <= MAX_TOP_LOGPROBS:
            return _error(400, f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}.",
                          "invalid_request_error", "invalid_value", "top_logprobs")
        max_tokens = body.get("max_tokens") or len(CANNED)
        tokens = CANNED[:max_tokens]
        text = b"".join(t.raw for t in tokens).decode("utf-8", errors="replace")
        logprobs = None
        if body.get("logprobs") and model not in config.plain_models:
            content = []
            for pos, tok in enumerate(tokens):
                alts = alternatives(pos, tok)[:top]
                content.append({
                    "token": tok.token, "logprob": tok.logprob, "bytes": list(tok.raw),
                    # worst first: a client must not rely on the order it is sent in
                    "top_logprobs": [{"token": s, "logprob": lp,
                                      "bytes": _RAW.get(s, list(s.encode()))}
                                     for s, lp in reversed(alts)],
                })
            logprobs = {"content": content, "refusal": None}
        return {
            "id": f"chatcmpl-stub-{len(config.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": logprobs,
                "finish_reason": "length" if len(tokens) < len(CANNED) else "stop",
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": len(tokens),
                      "total_tokens": 5 + len(tokens)},
        }

    return app


@contextmanager
def serve(config: StubConfig, timeout: float = 10.0):
    """Run the stub on a free loopback port in a background thread; yield its base URL
    (ending in /v1) and shut it down on exit."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(make_app(config), log_level="warning",
                                           lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the OpenAI stub did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
