"""A circuit breaker per model: stop sending routed requests to a model that keeps failing,
and find out, one request at a time, when it answers again.

    closed --(`failures` failed attempts in a row)--> open
    open --(`open_s` later, the next request is let through as a probe)--> half-open
    half-open --(the probe answers)--> closed;  --(the probe fails)--> open again

While half-open only the probe goes to the model; a probe that never reports (its gateway
was killed) frees the slot after `probe_s`. Any success closes the breaker: the model
evidently answers.

`MemoryBreaker` keeps the states in this process. `RedisBreaker` keeps them in Redis, one
hash per model, each transition one Lua script (atomic), so every gateway pointed at the same
Redis shares one view: a model that failed behind one gateway is skipped by all, and only
one probe at a time goes to it across all of them. Time comes from `clock` (seconds, wall
time by default so that gateways agree); tests move it by hand. If Redis does not answer,
the breaker lets the attempt through (it only saves time; the failover still catches the
failure) and says so in the log.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol

log = logging.getLogger("persea.route")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerSettings:
    failures: int = 5     # failed attempts in a row that open the breaker
    open_s: float = 30.0  # how long it stays open before a probe may go
    probe_s: float = 60.0  # a probe that has not reported by then frees its slot


class Breaker(Protocol):
    async def allow(self, model: str) -> bool:
        """May an attempt go to `model` now? True when closed; when open for `open_s`
        already, True once (the probe: the breaker is half-open until it reports)."""

    async def record(self, model: str, ok: bool) -> None:
        """The outcome of an attempt that `allow` let through."""

    async def state(self, model: str) -> str: ...

    async def aclose(self) -> None: ...


@dataclass
class _State:
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probe_until: float = 0.0


class MemoryBreaker:
    """Breakers in this process (one event loop: no lock needed)."""

    def __init__(self, settings: BreakerSettings = BreakerSettings(),
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clock = clock
        self._states: dict[str, _State] = {}

    async def allow(self, model: str) -> bool:
        s = self._states.get(model)
        if s is None or s.state == CLOSED:
            return True
        now = self.clock()
        if s.state == OPEN and now < s.opened_at + self.settings.open_s:
            return False
        if s.state == HALF_OPEN and now < s.probe_until:
            return False  # a probe is out
        s.state, s.probe_until = HALF_OPEN, now + self.settings.probe_s
        return True

    async def record(self, model: str, ok: bool) -> None:
        s = self._states.setdefault(model, _State())
        if ok:
            s.state, s.failures = CLOSED, 0
            return
        s.failures += 1
        if s.state == HALF_OPEN or (s.state == CLOSED and s.failures >= self.settings.failures):
            s.state, s.opened_at = OPEN, self.clock()

    async def state(self, model: str) -> str:
        s = self._states.get(model)
        return s.state if s is not None else CLOSED

    async def aclose(self) -> None:
        pass


# KEYS[1]: the model's hash. ARGV: now, open_s, probe_s. Returns 1 (go) or 0.
_ALLOW = """
local v = redis.call('HMGET', KEYS[1], 'state', 'opened_at', 'probe_until')
local state = v[1]
if state == false or state == 'closed' then return 1 end
local now = tonumber(ARGV[1])
if state == 'open' and now < tonumber(v[2]) + tonumber(ARGV[2]) then return 0 end
if state == 'half_open' and now < tonumber(v[3]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe_until',
           tostring(now + tonumber(ARGV[3])))
return 1
"""

# KEYS[1]: the model's hash. ARGV: ok (1/0), now, failures threshold, ttl. Returns the state.
_RECORD = """
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
  return 'closed'
end
local v = redis.call('HMGET', KEYS[1], 'state', 'failures')
local state = v[1]
if state == false then state = 'closed' end
local failures = (tonumber(v[2]) or 0) + 1
redis.call('HSET', KEYS[1], 'failures', tostring(failures))
if state == 'half_open' or (state == 'closed' and failures >= tonumber(ARGV[3])) then
  state = 'open'
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', ARGV[2])
elseif state == 'closed' then
  redis.call('HSET', KEYS[1], 'state', 'closed')
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return state
"""


class RedisBreaker:
    """Breakers in Redis, shared by every gateway that points at the same server and
    `prefix`. A closed breaker with no failures has no key at all."""

    TTL_S = 86_400  # a key nobody touched for a day is forgotten (closed)

    def __init__(self, url: str, settings: BreakerSettings = BreakerSettings(),
                 clock: Callable[[], float] = time.time, prefix: str = "persea:cb:"):
        import redis.asyncio as redis

        self.settings = settings
        self.clock = clock
        self._redis = redis.Redis.from_url(url, decode_responses=True,
                                           socket_connect_timeout=2, socket_timeout=2)
        self._prefix = prefix
        self._allow = self._redis.register_script(_ALLOW)
        self._record = self._redis.register_script(_RECORD)

    async def allow(self, model: str) -> bool:
        try:
            return bool(await self._allow(keys=[self._prefix + model], args=[
                repr(self.clock()), repr(self.settings.open_s), repr(self.settings.probe_s)]))
        except Exception as err:  # noqa: BLE001 - no breaker state: let the attempt decide
            log.warning("circuit breaker store failed (%s); trying %s", type(err).__name__,
                        model)
            return True

    async def record(self, model: str, ok: bool) -> None:
        try:
            await self._record(keys=[self._prefix + model], args=[
                "1" if ok else "0", repr(self.clock()), self.settings.failures, self.TTL_S])
        except Exception as err:  # noqa: BLE001
            log.warning("circuit breaker store failed (%s) recording %s", type(err).__name__,
                        model)

    async def state(self, model: str) -> str:
        return await self._redis.hget(self._prefix + model, "state") or CLOSED

    async def aclose(self) -> None:
        await self._redis.aclose()


def make_breaker(settings: BreakerSettings, redis_url: str | None = None,
                 clock: Callable[[], float] = time.time) -> Breaker:
    return RedisBreaker(redis_url, settings, clock) if redis_url \
        else MemoryBreaker(settings, clock)
