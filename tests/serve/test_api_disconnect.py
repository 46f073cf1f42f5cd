"""A caller that goes away mid-stream: generation stops and only what was produced is
charged, in exactly one usage record, with nothing left reserved."""

from __future__ import annotations

import json
import time

import httpx

from tests.serve.gateway_env import env, toy_model  # noqa: F401 - fixtures

MAX_TOKENS = 200


def _wait_for_usage(env, request_id: str, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rec = env.usage(request_id)
        if rec is not None:
            return rec
        time.sleep(0.02)
    raise AssertionError(f"no usage record for {request_id} after {seconds} s")


def test_disconnect_mid_stream_charges_only_tokens_generated(env):
    body = {"model": "toy", "prompt": "Once upon a time", "max_tokens": MAX_TOKENS,
            "temperature": 0, "stream": True}
    received = 0
    request_id = None
    generated_before = env.toy.tokens_generated
    with httpx.stream("POST", env.url + "/v1/completions", json=body, headers=env.headers(),
                      timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                request_id = chunk["id"]
                received += 1
                if received == 3:
                    break  # leaving the block closes the connection mid-stream
    rec = _wait_for_usage(env, request_id)
    assert received <= rec.completion_tokens < MAX_TOKENS
    assert rec.prompt_tokens > 0
    # The row stopped: the model did not go on to max_tokens after the caller left (the
    # toy model continues this prompt well past MAX_TOKENS when read to the end).
    assert _settled_count(env) - generated_before < MAX_TOKENS // 2


def _settled_count(env) -> int:
    """The backend's token count once it has stopped changing (the model is idle)."""
    last, stable_since = env.toy.tokens_generated, time.monotonic()
    while time.monotonic() - stable_since < 0.5:
        time.sleep(0.05)
        if env.toy.tokens_generated != last:
            last, stable_since = env.toy.tokens_generated, time.monotonic()
    return last
    spent, reserved = env.balance("acme")
    assert reserved == 0


def test_the_same_stream_read_to_the_end_is_charged_in_full(env):
    body = {"model": "toy", "prompt": "Once upon a time", "max_tokens": 30,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", env.url + "/v1/completions", json=body, headers=env.headers(),
                      timeout=30) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    usage = json.loads(lines[-2][6:])["usage"]
    rec = env.usage(json.loads(lines[0][6:])["id"])
    assert usage["completion_tokens"] == rec.completion_tokens == 30
