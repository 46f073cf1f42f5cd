"""The model starts while the reservation commits, and the answer waits for it.

What must hold (docs/billing.md, "The reserve off the critical path"): the model is asked
before the reserve has committed; no answer (whole, or a stream's first chunk) reaches the
caller before it has; a refused reserve is a 402 with nothing held and no usage record,
even when the model already answered; after a 402 the org's requests wait for the commit
before the model is asked."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from persea.db.schema import reservations, usage_records
from tests.serve.gateway_env import start_env, stop_env, toy_model  # noqa: F401 - fixture

CHAT = [{"role": "user", "content": "hi"}]


class TimedStub:
    """Wraps the stub upstream's app: when each request reached it."""

    def __init__(self, stub):
        self.stub = stub
        self.reached: list[float] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.reached.append(time.monotonic())
        await self.stub(scope, receive, send)


@pytest.fixture
def env(tmp_path, toy_model):  # noqa: F811 - the fixture imported above
    gateway, stub_server = start_env(f"sqlite:///{tmp_path / 'persea.db'}", toy_model)
    timed = TimedStub(gateway.stub)
    stub_server.server.config.loaded_app = timed  # the server serves through the wrapper
    gateway.timed = timed
    yield gateway
    stop_env(gateway, stub_server)


def _slow_reserves(env, seconds: float) -> list[float]:
    """Every reserve op sleeps `seconds` inside its transaction; returns when each ended."""
    ended: list[float] = []
    real = env.accounts.reserve_op

    def reserve_op(*args, **kwargs):
        op = real(*args, **kwargs)

        def slow(conn):
            time.sleep(seconds)
            try:
                return op(conn)
            finally:  # held or refused
                ended.append(time.monotonic())
        return slow

    env.accounts.reserve_op = reserve_op
    return ended


def _count(env, table) -> int:
    env.settled()
    with env.accounts.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


@pytest.mark.parametrize("stream", [False, True])
def test_the_model_starts_before_the_commit_and_the_answer_waits_for_it(env, stream):
    ended = _slow_reserves(env, 0.4)
    r = env.post("/v1/chat/completions", {"model": "stub", "messages": CHAT,
                                          "max_tokens": 4, "stream": stream})
    answered = time.monotonic()
    assert r.status_code == 200, r.text
    assert len(ended) == 1 and len(env.timed.reached) == 1
    assert env.timed.reached[0] < ended[0] <= answered  # asked first, answered after
    assert env.usage(r.headers["x-request-id"]) is not None


def test_a_refused_reserve_is_a_402_even_when_the_model_already_answered(env):
    ended = _slow_reserves(env, 0.3)
    body = {"model": "stub", "messages": CHAT, "max_tokens": 200}  # 0.0004 > the 0.0002 budget
    r = env.post("/v1/chat/completions", body, org="poor")
    assert r.status_code == 402, r.text
    assert r.json()["error"]["code"] == "insufficient_quota"
    assert len(env.timed.reached) == 1 and env.timed.reached[0] < ended[0]  # it ran, unbilled
    assert _count(env, usage_records) == 0 and _count(env, reservations) == 0
    assert env.balance("poor") == (Decimal(0), Decimal(0))
    # refused once: the org's next requests wait for the commit before the model is asked
    for stream in (False, True):
        again = env.post("/v1/chat/completions", {**body, "stream": stream}, org="poor")
        assert again.status_code == 402
    assert len(env.timed.reached) == 1
    fits = env.post("/v1/chat/completions", {**body, "max_tokens": 4}, org="poor")
    assert fits.status_code == 200 and len(env.timed.reached) == 2
    assert _count(env, usage_records) == 1


def test_a_refused_stream_is_a_402_status_not_a_stream(env):
    _slow_reserves(env, 0.2)
    r = env.post("/v1/chat/completions", {"model": "stub", "messages": CHAT,
                                          "max_tokens": 200, "stream": True}, org="poor")
    assert r.status_code == 402 and r.headers["content-type"].startswith("application/json")
    assert _count(env, usage_records) == 0 and env.balance("poor") == (Decimal(0), Decimal(0))


def test_a_long_generation_is_cancelled_as_soon_as_the_reserve_is_refused(env):
    env.stub.delay = 5.0  # the model would take 5 s
    started = time.monotonic()
    r = env.post("/v1/chat/completions", {"model": "stub", "messages": CHAT,
                                          "max_tokens": 200}, org="poor")
    assert r.status_code == 402
    assert time.monotonic() - started < 4.0  # refused at the commit, not after the model
    env.stub.delay = 0.0
    assert env.balance("poor") == (Decimal(0), Decimal(0))


def test_without_overlap_the_commit_comes_first(tmp_path, toy_model):  # noqa: F811
    env, stub_server = start_env(f"sqlite:///{tmp_path / 'serial.db'}", toy_model,
                                 overlap=False)
    try:
        timed = TimedStub(env.stub)
        stub_server.server.config.loaded_app = timed
        ended = _slow_reserves(env, 0.3)
        r = env.post("/v1/chat/completions", {"model": "stub", "messages": CHAT,
                                              "max_tokens": 4})
        assert r.status_code == 200 and ended[0] < timed.reached[0]
    finally:
        stop_env(env, stub_server)

