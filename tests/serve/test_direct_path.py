"""The generation endpoints skip FastAPI's routing (persea.serve.app.GatewayApp): every
answer must be the same as FastAPI's own path gives, refusals and failures included."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.serve.gateway_env import env, toy_model  # noqa: F401 - fixtures

CHAT = {"model": "stub", "messages": [{"role": "user", "content": "hi there"}],
        "max_tokens": 5}
TEXT = {"model": "stub", "prompt": "hi there", "max_tokens": 5}
VARYING = {"id", "created"}  # differ between any two answers


def _cases():
    big = b'{"model": "stub", "prompt": "' + b"x" * (2 << 20) + b'"}'
    return {
        "chat": ("/v1/chat/completions", CHAT, "acme"),
        "text": ("/v1/completions", TEXT, "acme"),
        "chat stream": ("/v1/chat/completions", {**CHAT, "stream": True}, "acme"),
        "bad json": ("/v1/chat/completions", b'{"model": "stub", "messages": [', "acme"),
        "not an object": ("/v1/completions", b"[1, 2]", "acme"),
        "missing field": ("/v1/chat/completions", {"model": "stub"}, "acme"),
        "strict type": ("/v1/chat/completions", {**CHAT, "n": "2"}, "acme"),
        "unsupported": ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]},
                        "acme"),
        "unknown model": ("/v1/completions", {**TEXT, "model": "nope"}, "acme"),
        "no key": ("/v1/chat/completions", CHAT, None),
        "model not on the plan": ("/v1/completions", TEXT, "toyonly"),
        "over budget": ("/v1/chat/completions", {**CHAT, "max_tokens": 4000}, "poor"),
        "declared too large": ("/v1/completions", big, "acme"),
    }


def _answer(r: httpx.Response):
    kind = r.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        body = [{k: v for k, v in json.loads(e).items() if k not in VARYING}
                if e != "[DONE]" else e for e in events]
    else:
        body = r.json()
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in VARYING}
    return r.status_code, kind, body, r.headers.get("retry-after")


@pytest.fixture
def counted(env):
    """The app's direct handlers, counting their calls; FastAPI's path when switched off."""
    app = env.app
    calls = []

    def count(handler):
        async def wrapped(request):
            calls.append(request.url.path)
            return await handler(request)
        return wrapped

    original = app.direct
    app.direct = {path: count(h) for path, h in original.items()}
    yield app, calls, original
    app.direct = original


@pytest.mark.parametrize("case", list(_cases()))
def test_the_direct_path_answers_as_fastapi_does(env, counted, case):
    app, calls, original = counted
    path, body, org = _cases()[case]
    direct = _answer(env.post(path, body, org=org))
    assert calls == ([path] if case != "declared too large" else [])  # the edge refuses first
    app.direct = {}
    routed = _answer(env.post(path, body, org=org))
    assert len(calls) <= 1
    assert direct == routed


def test_a_chunked_body_too_large_is_413_on_the_direct_path(env, counted):
    app, calls, _ = counted

    def chunks():
        yield b'{"model": "stub", "prompt": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    r = httpx.post(env.url + "/v1/completions", content=chunks(), headers=env.headers(),
                   timeout=30)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert calls == ["/v1/completions"]


def test_a_bug_is_a_fixed_500_on_both_paths(env, counted, monkeypatch, caplog):
    app, calls, _ = counted

    async def broken(*args, **kwargs):
        raise RuntimeError("secret: postgresql://user:pw@host/db")

    monkeypatch.setattr(env.gateway, "admit", broken)
    direct = env.post("/v1/chat/completions", CHAT)
    app.direct = {}
    routed = env.post("/v1/chat/completions", CHAT)
    for r in (direct, routed):
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "internal_error"
        assert "secret" not in r.text
    assert calls == ["/v1/chat/completions"]
    assert "secret" not in caplog.text


def test_other_methods_on_the_direct_paths_go_through_fastapi(env, counted):
    app, calls, _ = counted
    r = httpx.get(env.url + "/v1/chat/completions", headers=env.headers())
    assert r.status_code == 405
    assert r.json()["error"]["message"] == "method GET is not allowed on /v1/chat/completions"
    assert calls == []
