"""Every refusal, sent raw with httpx: the status, the OpenAI error shape, the field named,
and that nothing was charged and no secret came back."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.serve.gateway_env import ADMIN_TOKEN, env, toy_model  # noqa: F401 - fixtures

CHAT = {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _error(r: httpx.Response, status: int, code: str | None = None,
           param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


def test_bad_json_is_400(env):
    _error(env.post("/v1/chat/completions", b'{"model": "stub", "messages": ['), 400,
           "invalid_json")
    _error(env.post("/v1/chat/completions", b'[1, 2]'), 400)


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "stub"}, "messages"),
    ({"model": "stub", "messages": [{"content": "hi"}]}, "messages[0].role"),
])
def test_missing_field_is_400_naming_it(env, body, param):
    err = _error(env.post("/v1/chat/completions", body), 400, "missing_required", param)
    assert param in err["message"]


@pytest.mark.parametrize("change, param", [
    ({"n": 100}, "n"), ({"temperature": 5}, "temperature"), ({"top_p": 0}, "top_p"),
    ({"max_tokens": 0}, "max_tokens"), ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"tools": [{"type": "function"}]}, "tools"), ({"logit_bias": {"1": 5}}, "logit_bias"),
])
def test_out_of_bounds_value_is_400_naming_it(env, change, param):
    _error(env.post("/v1/chat/completions", {**CHAT, **change}), 400, param=param)


def test_max_tokens_beyond_the_context_is_400(env):
    body = {"model": "toy", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4000}
    err = _error(env.post("/v1/chat/completions", body), 400, "context_length_exceeded",
                 "max_tokens")
    assert "room for" in err["message"]


def test_prompt_longer_than_the_context_is_400(env):
    body = {"model": "toy", "messages": [{"role": "user", "content": "word " * 3000}]}
    _error(env.post("/v1/chat/completions", body), 400, "context_length_exceeded", "messages")
    body = {"model": "toy", "prompt": "word " * 3000}
    _error(env.post("/v1/completions", body), 400, "context_length_exceeded", "prompt")


def test_oversized_body_is_413_before_parsing(env):
    big = b'{"model": "stub", "messages": [{"role": "user", "content": "' + b"x" * (2 << 20) \
        + b'"}]}'
    _error(env.post("/v1/chat/completions", big), 413, "request_too_large")

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"model": "stub", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}]}'

    r = httpx.post(env.url + "/v1/chat/completions", content=chunks(), headers=env.headers())
    _error(r, 413, "request_too_large")


def test_no_key_or_a_bad_key_is_401(env):
    _error(env.post("/v1/chat/completions", CHAT, org=None), 401, "invalid_api_key")
    r = httpx.post(env.url + "/v1/chat/completions", json=CHAT,
                   headers={"Authorization": "Bearer psk-not-a-key"})
    _error(r, 401, "invalid_api_key")
    r = httpx.get(env.url + "/v1/models", headers={"Authorization": "Basic abc"})
    _error(r, 401, "invalid_api_key")


def test_revoked_key_is_401_at_once(env):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    made = httpx.post(env.url + "/admin/orgs/acme/keys", json={"name": "short-lived"},
                      headers=admin)
    assert made.status_code == 201
    key = made.json()["key"]
    ok = httpx.post(env.url + "/v1/chat/completions", json=CHAT,
                    headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    revoked = httpx.post(env.url + f"/admin/keys/{made.json()['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    r = httpx.post(env.url + "/v1/chat/completions", json=CHAT,
                   headers={"Authorization": f"Bearer {key}"})
    err = _error(r, 401, "invalid_api_key")
    assert "revoked" in err["message"] and key not in r.text


def test_model_not_sold_is_403_and_unknown_model_404(env):
    _error(env.post("/v1/chat/completions", CHAT, org="toyonly"), 403, "model_not_allowed")
    _error(env.post("/v1/chat/completions", {**CHAT, "model": "gpt-9"}), 404,
           "model_not_found", "model")


def test_rate_limit_is_429_with_retry_after(env):
    codes = [env.post("/v1/chat/completions", CHAT, org="tight").status_code
             for _ in range(3)]
    assert codes[:2] == [200, 200]
    r = env.post("/v1/chat/completions", CHAT, org="tight")
    _error(r, 429, "rate_limit_exceeded")
    assert 1 <= int(r.headers["Retry-After"]) <= 60


def test_tokens_per_minute_limit_counts_prompt_plus_max_tokens(env):
    r = env.post("/v1/chat/completions", {**CHAT, "max_tokens": 700}, org="tokens")
    _error(r, 429, "request_too_large")
    assert r.headers["Retry-After"]
    assert env.post("/v1/chat/completions", {**CHAT, "max_tokens": 100},
                    org="tokens").status_code == 200
    # Two requests that may each use 450 of the 600 tokens a minute: the second fits only
    # because the first gave back what it reserved and did not use (the stub answers 11).
    for _ in range(2):
        r = env.post("/v1/chat/completions", {**CHAT, "max_tokens": 450}, org="tokens")
        assert r.status_code == 200, r.text
        env.settled()


def test_budget_spent_is_402_and_never_exceeded(env):
    caller = env.accounts.authenticate(env.keys["poor"])
    budget = caller.plan.monthly_budget
    statuses = []
    for _ in range(12):
        r = env.post("/v1/chat/completions", {**CHAT, "max_tokens": 10}, org="poor")
        statuses.append(r.status_code)
        if r.status_code == 402:
            err = _error(r, 402, "insufficient_quota")
            assert err["type"] == "insufficient_quota"
            break
    assert statuses[0] == 200 and statuses[-1] == 402
    spent, reserved = env.balance("poor")
    assert spent <= budget and reserved == 0
    # A request too expensive to fit is refused before any work, even the first one.
    _error(env.post("/v1/chat/completions", {**CHAT, "max_tokens": 200}, org="poor"), 402)


def test_logprobs_refused_unless_the_plan_allows_and_capped_when_it_does(env):
    body = {"model": "toy", "messages": [{"role": "user", "content": "What is 12 plus 30?"}],
            "logprobs": True, "top_logprobs": 5, "temperature": 0}
    err = _error(env.post("/v1/chat/completions", body), 403, "logprobs_not_allowed")
    assert "logprobs" in err["message"]
    _error(env.post("/v1/completions", {"model": "toy", "prompt": "hi", "logprobs": 3}), 403,
           "logprobs_not_allowed")
    r = env.post("/v1/chat/completions", body, org="lp")
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert content and all(len(t["top_logprobs"]) == 2 for t in content)  # plan cap: 2
    assert all(t["logprob"] <= 0 for t in content)
    _error(env.post("/v1/chat/completions", {**body, "logit_bias": {"5": 10}}, org="lp"), 403,
           "logprobs_not_allowed", "logit_bias")


def test_no_route_serves_files_and_unknown_paths_answer_in_shape(env):
    for path in ("/v1/files", "/weights", "/model.safetensors", "/docs", "/openapi.json"):
        _error(httpx.get(env.url + path), 404)
    _error(httpx.get(env.url + "/v1/chat/completions"), 405)


def test_no_key_reaches_a_log_or_an_answer(env, caplog):
    caplog.set_level(logging.DEBUG)
    key = env.keys["acme"]
    env.post("/v1/chat/completions", b"{nope")
    env.post("/v1/chat/completions", {**CHAT, "model": "missing"})
    env.stub.fail_next = 1
    r = env.post("/v1/chat/completions", CHAT)
    assert r.status_code == 502 and key not in r.text
    assert key not in caplog.text and key[4:] not in caplog.text
    assert "Traceback" not in caplog.text
