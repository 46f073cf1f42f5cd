"""Rate limits: requests and tokens per minute, as token buckets, in process or in Redis.

Each limit is a bucket holding up to `limit` units that refills at `limit / 60` units per
second, so a quiet caller may burst up to a minute's allowance and a busy one is held to the
rate. A request asks several buckets at once (requests per minute and tokens per minute of
its org): it is granted only if every bucket has room, and then takes from all of them, so a
refusal by one never uses up another. Refused, it learns how long until there would be room
(`Retry-After`).

`MemoryLimiter` serves one gateway process. `RedisLimiter` keeps the buckets in Redis and
does the check-and-take in one Lua script, atomically, with Redis's own clock, so several
gateway replicas share one limit.

Tokens per minute are charged `prompt + max_tokens` up front (what the request may use) and
the unused part is given back once the exact count is known (`refund`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Ask:
    """Take `cost` units from the bucket `key` that holds `limit` units per minute."""

    key: str
    limit: int
    cost: float


class Limiter(Protocol):
    async def acquire(self, asks: list[Ask]) -> float:
        """0.0 if granted (and taken), else seconds to wait; `math.inf` if a cost exceeds
        its limit (it can never be granted)."""

    async def refund(self, ask: Ask) -> None:
        """Give `ask.cost` units back to its bucket (never above the limit)."""

    async def ping(self) -> bool: ...

    async def aclose(self) -> None: ...


class MemoryLimiter:
    """Token buckets in this process (one event loop: no lock needed)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (units, at)

    def _level(self, ask: Ask, now: float) -> float:
        units, at = self._buckets.get(ask.key, (float(ask.limit), now))
        return min(float(ask.limit), units + (now - at) * ask.limit / 60.0)

    async def acquire(self, asks: list[Ask]) -> float:
        now = self._clock()
        levels = []
        wait = 0.0
        for a in asks:
            if a.cost > a.limit:
                return math.inf
            level = self._level(a, now)
            levels.append(level)
            if level < a.cost:
                wait = max(wait, (a.cost - level) * 60.0 / a.limit)
        if wait > 0:
            return wait
        for a, level in zip(asks, levels):
            self._buckets[a.key] = (level - a.cost, now)
        return 0.0

    async def refund(self, ask: Ask) -> None:
        now = self._clock()
        if ask.key in self._buckets:
            self._buckets[ask.key] = (min(float(ask.limit), self._level(ask, now) + ask.cost),
                                      now)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        pass


# KEYS: bucket keys. ARGV: limit1, cost1, limit2, cost2, ..., ttl. Returns the wait in
# seconds as a string ("0" granted, "inf" never), so Lua's number-to-integer reply
# conversion cannot round it away.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[#ARGV])
local levels = {}
local wait = 0
for i = 1, #KEYS do
  local limit = tonumber(ARGV[2 * i - 1])
  local cost = tonumber(ARGV[2 * i])
  if cost > limit then return 'inf' end
  local v = redis.call('HMGET', KEYS[i], 'u', 'at')
  local units = tonumber(v[1])
  local at = tonumber(v[2])
  if units == nil then units = limit; at = now end
  units = math.min(limit, units + (now - at) * limit / 60)
  levels[i] = units
  if units < cost then
    local w = (cost - units) * 60 / limit
    if w > wait then wait = w end
  end
end
if wait > 0 then return tostring(wait) end
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'u', tostring(levels[i] - tonumber(ARGV[2 * i])), 'at',
             tostring(now))
  redis.call('EXPIRE', KEYS[i], ttl)
end
return '0'
"""

_REFUND = """
local v = redis.call('HMGET', KEYS[1], 'u', 'at')
if v[1] == false then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local units = math.min(limit, tonumber(v[1]) + (now - tonumber(v[2])) * limit / 60)
units = math.min(limit, units + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'u', tostring(units), 'at', tostring(now))
return 1
"""


class RedisLimiter:
    """Token buckets in Redis, shared by every gateway that points at the same server."""

    TTL_S = 120  # a full bucket needs no key: it expires after a quiet while

    def __init__(self, url: str, prefix: str = "persea:rl:"):
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, decode_responses=True,
                                           socket_connect_timeout=2, socket_timeout=2)
        self._prefix = prefix
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._refund = self._redis.register_script(_REFUND)

    async def acquire(self, asks: list[Ask]) -> float:
        keys = [self._prefix + a.key for a in asks]
        args: list = [x for a in asks for x in (a.limit, repr(float(a.cost)))]
        reply = await self._acquire(keys=keys, args=[*args, self.TTL_S])
        return math.inf if reply == "inf" else float(reply)

    async def refund(self, ask: Ask) -> None:
        await self._refund(keys=[self._prefix + ask.key], args=[ask.limit, float(ask.cost)])

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    async def aclose(self) -> None:
        await self._redis.aclose()


def make_limiter(redis_url: str | None) -> Limiter:
    return RedisLimiter(redis_url) if redis_url else MemoryLimiter()


def retry_after_header(wait: float) -> str:
    """Whole seconds, at least 1: what `Retry-After` can carry."""
    return str(max(1, math.ceil(min(wait, 60.0))))
