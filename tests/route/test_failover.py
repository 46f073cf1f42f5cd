"""Routes through a real gateway and the `openai` client: the next model answers on a
connection error, a 5xx, a 429 or a timeout; a stream falls over only before its first token;
a breaker per model opens and closes; the bill names the route, the model that answered and
the attempts, and only the answer is charged, at the answering model's price."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest

from tests.route.route_env import PRICES, start_route_env

CHAT = [{"role": "user", "content": "What is 12 plus 30?"}]
ROUTES = {
    "auto": {"policy": "fallback", "models": ["primary", "backup"]},
    "via-dead": {"policy": "fallback", "models": ["dead", "primary"]},
    "outer": {"policy": "fallback", "models": ["dead", "auto"]},  # a route naming a route
    "hasty": {"policy": "fallback", "models": ["primary", "backup"],
              "attempt_timeout_s": 0.3},
    "once": {"policy": "fallback", "models": ["primary", "backup"], "max_attempts": 1},
}


@pytest.fixture
def env(tmp_path):
    e = start_route_env(f"sqlite:///{tmp_path / 'persea.db'}", ROUTES)
    yield e
    e.stop()


@pytest.fixture
def client(env):
    return openai.OpenAI(base_url=env.v1, api_key=env.key, max_retries=0)


def _cost(model: str, prompt: int, completion: int) -> Decimal:
    return sum(PRICES[model].cost(prompt, completion), Decimal(0))


def _answered(env, client, route: str, **kw):
    raw = client.chat.completions.with_raw_response.create(model=route, messages=CHAT,
                                                           max_tokens=8, **kw)
    r = raw.parse()
    return r, raw.headers["x-persea-model"], env.usage(r.id)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_the_next_model_answers_a_server_error_or_429(env, client, status):
    env.stubs["primary"].fail_next, env.stubs["primary"].fail_status = 1, status
    r, header, row = _answered(env, client, "auto")
    assert (r.model, header) == ("backup", "backup")
    assert r.choices[0].message.content.startswith("Hello from the stub")
    assert (row.model, row.route, row.attempts) == ("backup", "auto", 2)
    # charged once, at the answering model's price; the failed attempt cost nothing
    assert row.cost == _cost("backup", r.usage.prompt_tokens, r.usage.completion_tokens)
    spent, reserved = env.balance()
    assert (spent, reserved) == (row.cost, Decimal(0))
    assert [len(env.stubs[m].requests) for m in ("primary", "backup")] == [1, 1]


def test_a_refused_request_is_not_retried_elsewhere(env, client):
    env.stubs["primary"].fail_next, env.stubs["primary"].fail_status = 2, 400
    for _ in range(2):  # the breaker's threshold: the model answered, so it stays closed
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="auto", messages=CHAT, max_tokens=8)
        assert err.value.status_code == 502 and "not charged" in err.value.message
    assert len(env.stubs["backup"].requests) == 0
    assert env.rows() == [] and env.balance() == (Decimal(0), Decimal(0))
    assert _answered(env, client, "auto")[1] == "primary"


def test_connection_refused_falls_over_and_a_nested_route_is_followed(env, client):
    r, header, row = _answered(env, client, "via-dead")
    assert (header, row.model, row.route, row.attempts) == ("primary", "primary",
                                                            "via-dead", 2)
    env.stubs["primary"].fail_next = 1
    r, header, row = _answered(env, client, "outer")  # dead, then auto: primary, backup
    assert (header, row.model, row.route, row.attempts) == ("backup", "backup", "outer", 3)


def test_an_attempt_over_its_time_limit_passes_to_the_next(env, client):
    env.stubs["primary"].delay = 5.0
    r, header, row = _answered(env, client, "hasty")
    assert (header, row.model, row.attempts) == ("backup", "backup", 2)


def test_attempts_are_bounded_and_a_failure_of_all_costs_nothing(env, client):
    env.stubs["primary"].fail_next = 1
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="once", messages=CHAT, max_tokens=8)
    assert err.value.status_code == 502 and "1 attempt(s) failed" in err.value.message
    assert len(env.stubs["backup"].requests) == 0
    env.stubs["primary"].fail_next = env.stubs["backup"].fail_next = 1
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="auto", messages=CHAT, max_tokens=8)
    assert err.value.status_code == 502 and "2 attempt(s) failed" in err.value.message
    assert env.rows() == [] and env.balance() == (Decimal(0), Decimal(0))


def test_a_stream_falls_over_before_its_first_token(env, client):
    env.stubs["primary"].fail_next = 1
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=CHAT, max_tokens=8, stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["x-persea-model"] == "backup"
    chunks = list(raw.parse())
    assert {c.model for c in chunks} == {"backup"}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from the stub")
    row = env.usage(chunks[0].id)
    assert (row.model, row.route, row.attempts) == ("backup", "auto", 2)
    assert row.completion_tokens == chunks[-1].usage.completion_tokens == 8


def test_a_stream_that_breaks_after_its_first_token_is_not_answered_again(env, client):
    env.stubs["primary"].cut_after = 2
    stream = client.chat.completions.create(model="auto", messages=CHAT, max_tokens=8,
                                            stream=True)
    got, error = [], None
    try:
        for chunk in stream:
            got.extend(c.delta.content or "" for c in chunk.choices)
    except openai.APIError as err:  # the error event that ends the stream
        error = err
    # the first token got out; how many of the chunks the upstream sent before it broke
    # also do depends on timing (the answer waits for the reserve's commit, and a reset
    # connection can take chunks still in flight with it)
    assert "".join(got).startswith("Hello")
    assert error is not None and "not charged" in str(error)
    assert len(env.stubs["backup"].requests) == 0  # no second answer spliced in
    assert env.rows() == [] and env.balance() == (Decimal(0), Decimal(0))


def test_the_breaker_opens_after_its_threshold_and_a_good_probe_closes_it(env, client):
    primary = env.stubs["primary"]
    primary.fail_next = 2  # the threshold in route_env: 2 failures in a row
    for _ in range(2):
        assert _answered(env, client, "auto")[1] == "backup"
    assert len(primary.requests) == 2
    # open: the primary is skipped (not an attempt), the backup answers at once
    r, header, row = _answered(env, client, "auto")
    assert (header, row.attempts, len(primary.requests)) == ("backup", 1, 2)
    env.clock.advance(29)
    assert _answered(env, client, "auto")[1] == "backup" and len(primary.requests) == 2
    # after open_s one probe goes; it answers, so the breaker closes
    env.clock.advance(2)
    r, header, row = _answered(env, client, "auto")
    assert (header, row.model, row.attempts, len(primary.requests)) == ("primary", "primary",
                                                                         1, 3)
    assert _answered(env, client, "auto")[1] == "primary"
    metrics = httpx.get(env.url + "/metrics").text
    assert 'persea_route_attempts_total{model="primary",outcome="failed",route="auto"} 2.0' \
        in metrics


def test_a_failed_probe_opens_the_breaker_again(env, client):
    primary = env.stubs["primary"]
    primary.fail_next = 3
    for _ in range(2):
        _answered(env, client, "auto")
    env.clock.advance(31)
    assert _answered(env, client, "auto")[2].attempts == 2  # the probe failed
    assert len(primary.requests) == 3
    env.clock.advance(29)  # open again, counted from the failed probe
    assert _answered(env, client, "auto")[2].attempts == 1 and len(primary.requests) == 3


def test_every_breaker_open_is_a_503_that_costs_nothing(env, client):
    env.stubs["primary"].fail_next = env.stubs["backup"].fail_next = 2
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="auto", messages=CHAT, max_tokens=8)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="auto", messages=CHAT, max_tokens=8)
    assert err.value.status_code == 503 and "circuit open: primary, backup" in \
        err.value.message
    assert env.rows() == [] and env.balance() == (Decimal(0), Decimal(0))


def test_models_list_the_routes_and_a_direct_call_names_its_model(env, client):
    ids = {m.id for m in client.models.list()}
    assert {"primary", "backup", "dead", "auto", "outer"} <= ids
    assert client.models.retrieve("auto").id == "auto"
    raw = client.chat.completions.with_raw_response.create(model="primary", messages=CHAT,
                                                           max_tokens=4)
    row = env.usage(raw.parse().id)
    assert raw.headers["x-persea-model"] == "primary"
    assert (row.model, row.route, row.attempts) == ("primary", None, 1)


def test_a_key_limited_to_some_models_is_routed_among_those_only(tmp_path):
    env = start_route_env(f"sqlite:///{tmp_path / 'persea.db'}", ROUTES,
                          key_models=["backup"])
    try:
        client = openai.OpenAI(base_url=env.v1, api_key=env.key, max_retries=0)
        r = client.chat.completions.create(model="auto", messages=CHAT, max_tokens=4)
        assert r.model == "backup" and env.stubs["primary"].requests == []
        assert env.usage(r.id).attempts == 1
        with pytest.raises(openai.PermissionDeniedError):
            client.chat.completions.create(model="via-dead", messages=CHAT, max_tokens=4)
        assert sorted(m.id for m in client.models.list()) == ["auto", "backup", "hasty",
                                                              "once", "outer"]
    finally:
        env.stop()


def test_the_reservation_covers_the_dearest_model_of_the_route(env):
    """While the primary answers, the budget holds what the backup would cost: the route
    could still fall over to it."""
    import asyncio

    from persea.serve.backends.base import Prompt
    from persea.serve.wire import ChatCompletionRequest

    gw = env.gateway
    caller = env.accounts.authenticate(env.key)
    req = ChatCompletionRequest.model_validate({"model": "auto", "messages": CHAT,
                                                "max_tokens": 8})

    async def admit_and_release():
        adm = await gw.admit(caller, req, Prompt("chat", (("user", CHAT[0]["content"]),)),
                             "messages", "chatcmpl")
        held = env.accounts.balance(caller.org_id)[1]
        await gw.release(adm, error=False)
        return adm, held

    adm, held = asyncio.run(admit_and_release())
    prompt = adm.prepared.prompt_tokens
    worst = max(_cost(m, prompt, 8) for m in ("primary", "backup"))
    assert adm.reservation.amount == held == worst == _cost("backup", prompt, 8)
    assert env.balance() == (Decimal(0), Decimal(0))
