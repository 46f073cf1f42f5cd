"""Token-bucket rate limits, in process and in a real Redis (127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import math
import uuid

import pytest

from persea.serve.limits import (Ask, LimiterFull, MemoryLimiter, RedisLimiter, SharedLimiter,
                                 retry_after_header)

REDIS_URL = "redis://127.0.0.1:6379/0"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _redis_or_skip() -> RedisLimiter:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as err:
        pytest.skip(f"Redis at 127.0.0.1:6379 is not reachable ({type(err).__name__}); "
                    "the CI script starts it")
    return RedisLimiter(REDIS_URL, prefix=f"persea-test:{uuid.uuid4().hex}:")


@pytest.fixture(params=["memory", "shared", "redis"])
def limiter(request, tmp_path):
    if request.param == "shared":
        lim = SharedLimiter(SharedLimiter.create(tmp_path / "limits"))
    else:
        lim = MemoryLimiter() if request.param == "memory" else _redis_or_skip()
    yield lim
    if isinstance(lim, RedisLimiter):
        import redis

        r = redis.Redis.from_url(REDIS_URL)
        for key in r.scan_iter(match=lim._prefix + "*"):
            r.delete(key)


def run(coro):
    return asyncio.run(coro)


def test_grants_up_to_the_limit_then_says_how_long_to_wait(limiter):
    async def go():
        ask = Ask("org:a:rpm", 3, 1)
        granted = [await limiter.acquire([ask]) for _ in range(3)]
        refused = await limiter.acquire([ask])
        return granted, refused

    granted, refused = run(go())
    assert granted == [0.0, 0.0, 0.0]
    # 3 per minute refill one every 20 s; a little time has passed since the first take.
    assert 15.0 < refused <= 20.0
    assert retry_after_header(refused) in {str(s) for s in range(15, 21)}


def test_a_refusal_by_one_bucket_takes_nothing_from_the_others(limiter):
    async def go():
        rpm, tpm = Ask("org:b:rpm", 10, 1), Ask("org:b:tpm", 100, 80)
        first = await limiter.acquire([rpm, tpm])
        second = await limiter.acquire([rpm, tpm])  # tokens refuse: 20 left, 80 asked
        # The refused request must not have used a request slot: 9 remain.
        rest = [await limiter.acquire([Ask("org:b:rpm", 10, 1)]) for _ in range(9)]
        tenth = await limiter.acquire([Ask("org:b:rpm", 10, 1)])
        return first, second, rest, tenth

    first, second, rest, tenth = run(go())
    assert first == 0.0 and second > 0
    assert rest == [0.0] * 9
    assert tenth > 0


def test_a_cost_over_the_limit_can_never_be_granted(limiter):
    assert run(limiter.acquire([Ask("org:c:tpm", 100, 101)])) == math.inf


def test_refund_gives_unused_tokens_back(limiter):
    async def go():
        await limiter.acquire([Ask("org:d:tpm", 100, 90)])
        before = await limiter.acquire([Ask("org:d:tpm", 100, 50)])
        await limiter.refund(Ask("org:d:tpm", 100, 60))  # the request used 30 of its 90
        after = await limiter.acquire([Ask("org:d:tpm", 100, 50)])
        return before, after

    before, after = run(go())
    assert before > 0 and after == 0.0


def test_concurrent_callers_never_get_more_than_the_limit(limiter):
    async def go():
        results = await asyncio.gather(*[limiter.acquire([Ask("org:e:rpm", 10, 1)])
                                         for _ in range(40)])
        return sum(1 for r in results if r == 0.0)

    assert run(go()) == 10


def test_memory_buckets_refill_at_the_rate():
    clock = FakeClock()
    lim = MemoryLimiter(clock)

    async def go():
        ask = Ask("k", 60, 1)  # one per second
        for _ in range(60):
            assert await lim.acquire([ask]) == 0.0
        assert await lim.acquire([ask]) == pytest.approx(1.0)
        clock.now += 2.5
        return [await lim.acquire([ask]) for _ in range(3)]

    got = run(go())
    assert got[:2] == [0.0, 0.0] and got[2] == pytest.approx(0.5)


def _take_in_another_process(path: str, n: int, out) -> None:
    lim = SharedLimiter(path)
    out.put(sum(lim.acquire_now([Ask("org:p:rpm", 30, 1)]) == 0.0 for _ in range(n)))


def test_shared_buckets_hold_one_limit_across_processes(tmp_path):
    """Four processes (as `persea serve --workers 4`) take 20 each from one bucket of 30 per
    minute through the same file: 30 are granted in all, not 30 each."""
    import multiprocessing

    path = SharedLimiter.create(tmp_path / "limits")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_take_in_another_process, args=(path, 20, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    granted = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(granted) == 30 and all(p.exitcode == 0 for p in procs)


def test_shared_buckets_refill_and_full_ones_give_their_slot_away(tmp_path):
    clock = FakeClock()
    lim = SharedLimiter(SharedLimiter.create(tmp_path / "limits", slots=2), clock)
    one = Ask("one", 60, 1)  # one per second
    for _ in range(60):
        assert lim.acquire_now([one]) == 0.0
    assert lim.acquire_now([one]) == pytest.approx(1.0)
    clock.now += 2.5
    assert [lim.acquire_now([one]) for _ in range(2)] == [0.0, 0.0]
    assert lim.acquire_now([Ask("two", 60, 1)]) == 0.0  # the second slot
    with pytest.raises(LimiterFull):  # both slots hold buckets below their limit
        lim.acquire_now([Ask("three", 60, 1)])
    clock.now += 61  # both full again: the same as no bucket, so a new key may take one
    assert lim.acquire_now([Ask("three", 60, 60)]) == 0.0
    assert lim.acquire_now([Ask("three", 60, 1)]) > 0  # its own bucket, not one's
    assert lim.acquire_now([one]) == 0.0
