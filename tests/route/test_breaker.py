"""The breaker's states, driven by a clock the test moves, kept in this process or in Redis;
and, through Redis, one state shared by two gateways."""

from __future__ import annotations

import asyncio
import uuid

import openai
import pytest

from persea.route.breaker import CLOSED, HALF_OPEN, OPEN, BreakerSettings, MemoryBreaker, \
    RedisBreaker
from tests.route.route_env import FakeClock, start_route_env

REDIS_URL = "redis://127.0.0.1:6379/0"
SETTINGS = BreakerSettings(failures=3, open_s=10, probe_s=20)


def _redis_or_skip():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as err:
        pytest.skip(f"Redis unreachable at {REDIS_URL} ({type(err).__name__})")


def _forget(prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    for key in r.scan_iter(match=prefix + "*"):
        r.delete(key)


@pytest.fixture(params=["memory", "redis"])
def make(request):
    """make(clock) -> a breaker; with Redis, every breaker of one test shares a prefix."""
    if request.param == "memory":
        yield lambda clock: MemoryBreaker(SETTINGS, clock)
        return
    _redis_or_skip()
    prefix = f"persea-test:cb:{uuid.uuid4().hex}:"
    yield lambda clock: RedisBreaker(REDIS_URL, SETTINGS, clock, prefix=prefix)
    _forget(prefix)


def test_states_closed_open_half_open_closed(make):
    async def run():
        clock = FakeClock()
        b = make(clock)
        for _ in range(2):
            assert await b.allow("m")
            await b.record("m", False)
        assert await b.state("m") == CLOSED
        await b.record("m", True)  # a success resets the count: failures must be in a row
        for _ in range(3):
            await b.record("m", False)
        assert await b.state("m") == OPEN and not await b.allow("m")
        assert await b.allow("other")  # per model
        clock.advance(9.9)
        assert not await b.allow("m")
        clock.advance(0.2)
        assert await b.allow("m")  # the probe
        assert await b.state("m") == HALF_OPEN
        assert not await b.allow("m")  # one probe at a time
        await b.record("m", True)
        assert await b.state("m") == CLOSED and await b.allow("m")
        await b.aclose()

    asyncio.run(run())


def test_a_failed_probe_reopens_and_a_lost_probe_frees_its_slot(make):
    async def run():
        clock = FakeClock()
        b = make(clock)
        for _ in range(3):
            await b.record("m", False)
        clock.advance(10)
        assert await b.allow("m")
        await b.record("m", False)
        assert await b.state("m") == OPEN
        clock.advance(9)
        assert not await b.allow("m")
        clock.advance(1)
        assert await b.allow("m")  # this probe never reports (its gateway died)
        clock.advance(19)
        assert not await b.allow("m")
        clock.advance(1)
        assert await b.allow("m")  # after probe_s another may go
        await b.aclose()

    asyncio.run(run())


def test_two_redis_breakers_share_one_state():
    _redis_or_skip()
    prefix = f"persea-test:cb:{uuid.uuid4().hex}:"

    async def run():
        clock = FakeClock()
        a = RedisBreaker(REDIS_URL, SETTINGS, clock, prefix=prefix)
        b = RedisBreaker(REDIS_URL, SETTINGS, clock, prefix=prefix)
        for breaker in (a, b, a):  # failures seen by different gateways add up
            await breaker.record("m", False)
        assert not await b.allow("m")
        clock.advance(10)
        assert await a.allow("m")
        assert not await b.allow("m")  # a's probe is out: b sends none
        await a.record("m", True)
        assert await b.allow("m")
        await a.aclose()
        await b.aclose()

    try:
        asyncio.run(run())
    finally:
        _forget(prefix)


def test_redis_down_lets_attempts_through():
    async def run():
        b = RedisBreaker("redis://127.0.0.1:1/0", SETTINGS, FakeClock())
        assert await b.allow("m")
        await b.record("m", False)  # logged, not raised
        await b.aclose()

    asyncio.run(run())


def test_two_gateways_share_breakers_through_redis(tmp_path):
    """Failures behind gateway A open the primary's breaker for gateway B too: B's next
    request goes straight to the backup, and the primary sees no request from it."""
    _redis_or_skip()
    prefix = f"persea-test:cb:{uuid.uuid4().hex}:"
    clock = FakeClock()
    settings = BreakerSettings(failures=2, open_s=30, probe_s=60)
    db = f"sqlite:///{tmp_path / 'persea.db'}"
    routes = {"auto": {"policy": "fallback", "models": ["primary", "backup"]}}
    a = start_route_env(db, routes, clock=clock,
                        breaker=RedisBreaker(REDIS_URL, settings, clock, prefix=prefix))
    b = start_route_env(db, routes, clock=clock, accounts_prefix="b-",
                        breaker=RedisBreaker(REDIS_URL, settings, clock, prefix=prefix),
                        stubs={"primary": a.servers[1].url, "backup": a.servers[2].url})
    try:
        ca = openai.OpenAI(base_url=a.v1, api_key=a.key, max_retries=0)
        cb = openai.OpenAI(base_url=b.v1, api_key=b.key, max_retries=0)
        primary = a.stubs["primary"]
        primary.fail_next = 2
        for _ in range(2):
            assert ca.chat.completions.create(model="auto", messages=[
                {"role": "user", "content": "hi"}], max_tokens=4).model == "backup"
        assert len(primary.requests) == 2
        r = cb.chat.completions.create(model="auto", messages=[
            {"role": "user", "content": "hi"}], max_tokens=4)
        assert r.model == "backup" and len(primary.requests) == 2
        assert b.usage(r.id).attempts == 1
        clock.advance(31)  # B's probe finds the primary well: closed for A too
        assert cb.chat.completions.create(model="auto", messages=[
            {"role": "user", "content": "hi"}], max_tokens=4).model == "primary"
        assert ca.chat.completions.create(model="auto", messages=[
            {"role": "user", "content": "hi"}], max_tokens=4).model == "primary"
    finally:
        b.stop()
        a.stop()
        _forget(prefix)
