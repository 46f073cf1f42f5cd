"""Rate limits: requests and tokens per minute, as token buckets, in process or in Redis.

Each limit is a bucket holding up to `limit` units that refills at `limit / 60` units per
second, so a quiet caller may burst up to a minute's allowance and a busy one is held to the
rate. A request asks several buckets at once (requests per minute and tokens per minute of
its org): it is granted only if every bucket has room, and then takes from all of them, so a
refusal by one never uses up another. Refused, it learns how long until there would be room
(`Retry-After`).

`MemoryLimiter` serves one gateway process. `SharedLimiter` serves the worker processes of
one `persea serve --workers N` on one machine: the buckets live in a small memory-mapped file
that every worker maps, and each check-and-take holds an exclusive `flock` on it, so the
workers share one limit without Redis. `RedisLimiter` keeps the buckets in Redis and
does the check-and-take in one Lua script, atomically, with Redis's own clock, so several
gateway replicas share one limit.

Tokens per minute are charged `prompt + max_tokens` up front (what the request may use) and
the unused part is given back once the exact count is known (`refund`).
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
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


class LimiterFull(RuntimeError):
    """No free slot for a new bucket in a `SharedLimiter` file (the gateway fails closed)."""


class SharedLimiter:
    """Token buckets in a file shared by the processes of one machine (`MemoryLimiter`'s
    rules, the same answers).

    The file is a fixed open-addressing table of `slots` buckets: a 16-byte BLAKE2b digest
    of the key (zeros: never used), the units left, when they were counted and the bucket's
    limit. A key's slot is found by linear probing from its digest, over at most `PROBE`
    slots. A bucket that has refilled to its limit means the same as no bucket, so its slot
    is taken over by a new key (after the probe has made sure that key has no slot yet).
    Every call holds `flock(LOCK_EX)` on the file for a few microseconds: the check and the
    take are one step across all processes. The clock is CLOCK_MONOTONIC, one per machine.
    `create` makes the file; each process opens it with `SharedLimiter(path)`."""

    SLOT = struct.Struct("<16sddd")  # digest, units, at, limit
    PROBE = 64

    def __init__(self, path: str | os.PathLike, clock=time.monotonic):
        self.path = os.fspath(path)
        self._clock = clock
        self._fd = os.open(self.path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        if size == 0 or size % self.SLOT.size:
            os.close(self._fd)
            raise ValueError(f"{self.path}: not a rate-limit table")
        self.slots = size // self.SLOT.size
        self._map = mmap.mmap(self._fd, size)

    @classmethod
    def create(cls, path: str | os.PathLike, slots: int = 16384) -> str:
        """Make an empty table of `slots` buckets at `path` (mode 0600); returns the path."""
        fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, slots * cls.SLOT.size)
        finally:
            os.close(fd)
        return os.fspath(path)

    def _find(self, key: str, now: float) -> tuple[int, bytes, tuple | None]:
        """(slot, digest, (units, at, limit) or None when the key has no bucket yet). Call
        with the lock held."""
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        start = int.from_bytes(digest[:8], "little") % self.slots
        free = None
        for i in range(min(self.PROBE, self.slots)):
            slot = (start + i) % self.slots
            d, units, at, limit = self.SLOT.unpack_from(self._map, slot * self.SLOT.size)
            if d == digest:
                return slot, digest, (units, at, limit)
            empty = d == bytes(16)
            if free is None and (empty or units + (now - at) * limit / 60.0 >= limit):
                free = slot  # never used, or a full bucket: the same as no bucket
            if empty:
                break
        if free is None:
            raise LimiterFull(f"{self.path}: no free slot for a new rate-limit bucket")
        return free, digest, None

    @staticmethod
    def _level(found: tuple | None, limit: int, now: float) -> float:
        if found is None:
            return float(limit)
        units, at, _ = found
        return min(float(limit), units + (now - at) * limit / 60.0)

    def _put(self, slot: int, digest: bytes, units: float, now: float, limit: int) -> None:
        self.SLOT.pack_into(self._map, slot * self.SLOT.size, digest, units, now, float(limit))

    def acquire_now(self, asks: list[Ask]) -> float:
        if any(a.cost > a.limit for a in asks):
            return math.inf
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = self._clock()
            found = []
            wait = 0.0
            for a in asks:
                slot, digest, hit = self._find(a.key, now)
                level = self._level(hit, a.limit, now)
                found.append((slot, digest, level))
                if level < a.cost:
                    wait = max(wait, (a.cost - level) * 60.0 / a.limit)
            if wait > 0:
                return wait
            for a, (slot, digest, level) in zip(asks, found):
                self._put(slot, digest, level - a.cost, now, a.limit)
            return 0.0
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    async def acquire(self, asks: list[Ask]) -> float:
        return self.acquire_now(asks)

    async def refund(self, ask: Ask) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            now = self._clock()
            slot, digest, hit = self._find(ask.key, now)
            if hit is not None:
                level = self._level(hit, ask.limit, now)
                self._put(slot, digest, min(float(ask.limit), level + ask.cost), now,
                          ask.limit)
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    async def ping(self) -> bool:
        return not self._map.closed

    async def aclose(self) -> None:
        if not self._map.closed:
            self._map.close()
            os.close(self._fd)


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


def make_limiter(redis_url: str | None, shared_file: str | None = None) -> Limiter:
    """Redis when a URL is given; else the file shared by this machine's workers when one is
    given; else this process's memory."""
    if redis_url:
        return RedisLimiter(redis_url)
    return SharedLimiter(shared_file) if shared_file else MemoryLimiter()


def retry_after_header(wait: float) -> str:
    """Whole seconds, at least 1: what `Retry-After` can carry."""
    return str(max(1, math.ceil(min(wait, 60.0))))
