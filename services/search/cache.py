"""Result caches: Redis (shared by replicas), in-process memory (single replica), or none.

Invalidation is by generation, not by deleting keys: every tenant has an index generation stored in
the cache backend (Redis INCR, from a clock-based floor so that a restarted Redis never repeats a
number: see _INIT), bumped by every write; a result is stored under a key that contains the generation
it was computed at, so after a write the next query computes a new key and misses; stale entries
simply age out (TTL). `lookup` reads the generation and the entry in one Redis round trip (a
small Lua script).

Failure policy: the cache never fails a query. A Redis error or timeout marks the cache unavailable
for `retry_after_s` (the optional `backend:redis` health probe reports it; the service stays SERVING)
and lookups return "bypass". A write whose generation bump failed marks the tenant dirty: its queries
bypass the cache until a bump succeeds, so this replica never serves a result older than its own write.
(Other replicas can serve a pre-write entry from Redis until it expires; the TTL bounds that.)

Every bump is also pushed to the cache's `feed` (generations.py), which WatchIndexGenerations streams:
an in-process cache pushes its own bumps; Redis publishes each bump from the bump's Lua script and
`follow()` relays what every replica published. A failed bump ends every watch, because its push
never happens.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from services.common.outage import SkipWindow
from services.common.redis import fail_fast_client
from services.search.generations import GenerationFeed, RedisGenerationRelay, channel_name
from services.search.metrics import CACHE_AVAILABLE, CACHE_LATENCY
from services.search.settings import SearchSettings

log = structlog.get_logger("search.cache")


@dataclass(frozen=True, slots=True)
class Lookup:
    """Outcome of a cache lookup: `available` False means "do not use the cache for this query"."""

    available: bool
    generation: int = 0
    value: Any = None


class ResultCache(Protocol):
    name: str
    feed: GenerationFeed  # every bump, pushed as it lands (WatchIndexGenerations)

    async def follow(self) -> None:
        """Run for the service's lifetime, feeding `feed` with bumps made elsewhere (other replicas)."""

    async def lookup(self, tenant: str, digest: str) -> Lookup: ...

    async def store(self, tenant: str, generation: int, digest: str, value: Any) -> None: ...

    async def bump(self, tenant: str) -> int | None:
        """Advance the tenant's generation; the new value, or None if the cache could not record it."""

    async def generation(self, tenant: str) -> int | None: ...

    async def consistent_generation(self, tenant: str) -> int | None:
        """The generation when it can validate results cached elsewhere (the gateway's pages); None
        when it cannot (cache unreachable, or a failed bump still pending)."""

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


class _InProcessGenerations:
    """Generations counted in this process: the truth for a single search process (with several
    replicas, only a shared cache such as Redis gives them one generation per tenant). They start at
    the clock floor of the process's start (see _INIT), so a restarted process never repeats a number
    a gateway may still hold pages under."""

    def __init__(self) -> None:
        self._floor = generation_floor()
        self._gen: dict[str, int] = {}
        self.feed = GenerationFeed(live=True)

    async def follow(self) -> None:
        return None  # every bump of this process's generations is made here, and pushed by bump()

    async def bump(self, tenant: str) -> int | None:
        self._gen[tenant] = self._gen.get(tenant, self._floor) + 1
        self.feed.publish(tenant, self._gen[tenant])
        return self._gen[tenant]

    async def generation(self, tenant: str) -> int | None:
        return self._gen.get(tenant, self._floor)

    async def consistent_generation(self, tenant: str) -> int | None:
        return self._gen.get(tenant, self._floor)

    async def healthy(self) -> bool:
        return True


class NoCache(_InProcessGenerations):
    """No caching; generations are still counted (in process) so responses report them."""

    name = "none"

    async def lookup(self, tenant: str, digest: str) -> Lookup:
        return Lookup(False, self._gen.get(tenant, self._floor))

    async def store(self, tenant: str, generation: int, digest: str, value: Any) -> None:
        return None

    async def close(self) -> None:
        return None


class MemoryCache(_InProcessGenerations):
    """In-process LRU with TTL. Values are kept as Python objects (no serialisation on a hit)."""

    name = "memory"

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        super().__init__()
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, int, str], tuple[float, Any]] = OrderedDict()
        CACHE_AVAILABLE.labels(self.name).set(1)

    async def lookup(self, tenant: str, digest: str) -> Lookup:
        gen = self._gen.get(tenant, self._floor)
        key = (tenant, gen, digest)
        entry = self._entries.get(key)
        if entry is None:
            return Lookup(True, gen)
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return Lookup(True, gen)
        self._entries.move_to_end(key)
        return Lookup(True, gen, value)

    async def store(self, tenant: str, generation: int, digest: str, value: Any) -> None:
        if generation != self._gen.get(tenant, self._floor):
            return  # a write landed while this result was computed: it may already be stale
        self._entries[(tenant, generation, digest)] = (time.monotonic() + self._ttl, value)
        self._entries.move_to_end((tenant, generation, digest))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


# Generations must never repeat, or a result (or a gateway page) cached at generation N is served again
# when the counter climbs back to N: Redis without persistence forgets its counters when it restarts.
# So a counter that does not exist is created at a floor from the clock (microseconds since the epoch)
# before it is read or incremented: a new Redis lifetime starts above every value an earlier lifetime
# reached (each write adds 1, and nothing writes a tenant a million times a second), so the numbers only
# ever grow. A tenant's first value is therefore this floor, not 0, when Redis holds the generations.
# KEYS[1] = generation key; ARGV[1] = floor.
_INIT = "redis.call('SET', KEYS[1], ARGV[1], 'NX')\n"
_GENERATION_LUA = _INIT + "return redis.call('GET', KEYS[1])\n"
# ARGV[2] = the generations channel, ARGV[3] = the tenant: the new value is published in the same
# atomic step, so no bump can land without its push.
_BUMP_LUA = (
    _INIT
    + """local gen = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3] .. ' ' .. gen)
return gen
"""
)
# KEYS[1] = generation key; ARGV[1] = floor, ARGV[2] = entry key prefix (ends with ':'), ARGV[3] = digest.
_LOOKUP_LUA = (
    _INIT
    + """local gen = redis.call('GET', KEYS[1])
local val = redis.call('GET', ARGV[2] .. gen .. ':' .. ARGV[3])
return {gen, val}
"""
)


def generation_floor() -> int:
    """Where a generation counter that Redis does not hold starts: the time in microseconds."""
    return time.time_ns() // 1000


class RedisCache:
    """Redis-backed cache shared by every replica; values are bytes (the core encodes them)."""

    name = "redis"

    def __init__(self, url: str, ttl_s: int, prefix: str, timeout_s: float, retry_after_s: float) -> None:
        self._ttl = ttl_s
        self._prefix = prefix
        self._skip = SkipWindow(retry_after_s)
        self._redis = fail_fast_client(url, timeout_s)
        self._lookup = self._redis.register_script(_LOOKUP_LUA)
        self._read_gen = self._redis.register_script(_GENERATION_LUA)
        self._incr_gen = self._redis.register_script(_BUMP_LUA)
        self._dirty: set[str] = set()
        self._last_gen: dict[str, int] = {}
        self._channel = channel_name(prefix)
        self.feed = GenerationFeed(live=False)
        self._relay = RedisGenerationRelay(url, prefix, self.feed, timeout_s, retry_after_s)
        CACHE_AVAILABLE.labels(self.name).set(1)

    async def follow(self) -> None:
        await self._relay.run()

    def _gen_key(self, tenant: str) -> str:
        return f"{self._prefix}gen:{tenant}"

    def _entry_prefix(self, tenant: str) -> str:
        return f"{self._prefix}r:{tenant}:"

    def _usable(self) -> bool:
        return self._skip.usable()

    def _failed(self, op: str, exc: BaseException) -> None:
        if self._skip.failed():
            log.warning("redis unavailable: bypassing the cache", op=op, error=repr(exc))
        CACHE_AVAILABLE.labels(self.name).set(0)

    def _ok(self) -> None:
        if self._skip.ok():
            log.info("redis is back: the cache is used again")
        CACHE_AVAILABLE.labels(self.name).set(1)

    async def _retry_dirty(self, tenant: str) -> bool:
        """Re-attempt a generation bump that failed; True when the tenant is clean again."""
        if tenant not in self._dirty:
            return True
        gen = await self.bump(tenant)
        return gen is not None

    async def lookup(self, tenant: str, digest: str) -> Lookup:
        last = self._last_gen.get(tenant, 0)
        if not self._usable() or not await self._retry_dirty(tenant):
            return Lookup(False, last)
        start = time.perf_counter()
        try:
            gen_raw, value = await self._lookup(
                keys=[self._gen_key(tenant)], args=[generation_floor(), self._entry_prefix(tenant), digest]
            )
        except Exception as exc:
            self._failed("lookup", exc)
            return Lookup(False, last)
        finally:
            CACHE_LATENCY.labels(self.name, "get").observe(time.perf_counter() - start)
        self._ok()
        gen = int(gen_raw)
        self._last_gen[tenant] = gen
        return Lookup(True, gen, value)

    async def store(self, tenant: str, generation: int, digest: str, value: Any) -> None:
        if not self._usable() or tenant in self._dirty:
            return
        start = time.perf_counter()
        try:
            await self._redis.set(f"{self._entry_prefix(tenant)}{generation}:{digest}", value, ex=self._ttl)
        except Exception as exc:
            self._failed("store", exc)
        finally:
            CACHE_LATENCY.labels(self.name, "set").observe(time.perf_counter() - start)

    async def bump(self, tenant: str) -> int | None:
        start = time.perf_counter()
        try:
            gen = int(
                await self._incr_gen(
                    keys=[self._gen_key(tenant)], args=[generation_floor(), self._channel, tenant]
                )
            )
        except Exception as exc:
            self._dirty.add(tenant)
            # The bump may or may not have landed (and been pushed): no watcher may trust its pushes.
            self.feed.interrupt("a generation bump failed", still_live=True)
            self._failed("bump", exc)
            return None
        finally:
            CACHE_LATENCY.labels(self.name, "bump").observe(time.perf_counter() - start)
        self._ok()
        self._dirty.discard(tenant)
        self._last_gen[tenant] = gen
        return gen

    async def generation(self, tenant: str) -> int | None:
        if not self._usable():
            return self._last_gen.get(tenant)
        try:
            raw = await self._read_gen(keys=[self._gen_key(tenant)], args=[generation_floor()])
        except Exception as exc:
            self._failed("generation", exc)
            return self._last_gen.get(tenant)
        gen = int(raw)
        self._last_gen[tenant] = gen
        return gen

    async def consistent_generation(self, tenant: str) -> int | None:
        if not self._usable() or not await self._retry_dirty(tenant):
            return None
        try:
            raw = await self._read_gen(keys=[self._gen_key(tenant)], args=[generation_floor()])
        except Exception as exc:
            self._failed("generation", exc)
            return None
        self._ok()
        gen = int(raw)
        self._last_gen[tenant] = gen
        return gen

    async def healthy(self) -> bool:
        try:
            ok = bool(await self._redis.ping())
        except Exception as exc:
            self._failed("ping", exc)
            return False
        if ok:
            self._ok()
        return ok

    async def close(self) -> None:
        await self._relay.close()
        await self._redis.aclose()


def make_cache(settings: SearchSettings) -> ResultCache:
    if settings.cache == "redis":
        return RedisCache(
            settings.redis_url,
            settings.cache_ttl_s,
            settings.cache_key_prefix,
            settings.redis_timeout_s,
            settings.redis_retry_after_s,
        )
    if settings.cache == "memory":
        return MemoryCache(settings.cache_ttl_s, settings.cache_max_entries)
    return NoCache()
