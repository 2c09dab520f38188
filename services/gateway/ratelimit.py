"""Per-tenant and per-caller rate limits: token buckets, in process or shared through Redis.

    RateLimits ── the gate the gateway calls: `search(principal)` before a search, `ingest_item(principal)`
       │          before each Ingest item; raises `RateLimited` (RESOURCE_EXHAUSTED + retry-after)
       └─ Limiter  (Protocol) ─┬─ MemoryLimiter  one process (the embedded default, `make run`)
                               └─ RedisLimiter   every replica shares a bucket (the real stack)

A bucket holds up to `burst` tokens and refills at `per_second`; a call takes `cost` tokens (1 per search,
1 per ingest item). A call checks the tenant's bucket and the caller's bucket together, all or nothing:
when either is short, nothing is taken and the answer says how long until both could pay.

The bucket arithmetic is `refill` + `settle`, pure functions of the stored level and a clock reading, so
it is tested with a fake clock. The Redis adapter runs the same arithmetic in one Lua script, atomically,
on Redis's clock (`TIME`): replicas' clocks never enter it.

Quotas: besides rates, a daily count of ingest items per tenant and per caller (one per item, counted
against the UTC day; `count` is all or nothing like `acquire`, and a refused item counts nowhere). The
answer names the quota and says to retry after the next UTC midnight.

Failure policy: the limiter fails open. A Redis error or timeout lets the call through, logs once per
outage, reports the `backend:ratelimit` health entry NOT_SERVING (optional: the gateway stays SERVING)
and skips Redis for `retry_after_s`. A limit protects capacity; refusing every search because the
limiter's store is down would turn a cache outage into a full outage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from cachetools import LRUCache
from prometheus_client import Counter

from services.common.errors import ResourceExhausted
from services.common.outage import SkipWindow
from services.common.redis import fail_fast_client

log = structlog.get_logger("gateway.ratelimit")

RETRY_AFTER_HEADER = "retry-after-ms"

RATE_LIMITED = Counter(
    "gateway_rate_limited_total",
    "Searches and ingest items refused by a rate limit, by kind and by whose bucket was short.",
    ["kind", "scope"],
)
FAILED_OPEN = Counter(
    "gateway_rate_limit_failed_open_total",
    "Calls let through unchecked because the rate limiter's Redis failed or was being skipped.",
)


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_second` tokens added per second, at most `burst` held (burst >= 1)."""

    per_second: float
    burst: float

    @classmethod
    def of(cls, per_second: float, burst: float) -> Rate | None:
        """A rate from settings; None (unlimited) when per_second is 0; burst 0 = one second's worth."""
        if per_second <= 0:
            return None
        return cls(per_second, burst if burst > 0 else max(1.0, per_second))


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    rate: Rate


@dataclass(frozen=True, slots=True)
class Quota:
    """At most `limit` units per `key` (the key names its period, e.g. the UTC day)."""

    key: str
    limit: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0
    denied: int = -1  # index of the bucket that refused (the one with the longest wait)


# ---- the arithmetic (pure) -------------------------------------------------------------------------


def refill(tokens: float | None, last: float | None, now: float, rate: Rate) -> float:
    """The level of a bucket last seen at `tokens` at time `last`, at time `now` (a new bucket is full).
    A clock that went backwards adds nothing."""
    if tokens is None or last is None:
        return rate.burst
    return min(rate.burst, tokens + max(0.0, now - last) * rate.per_second)


def settle(levels: Sequence[float], rates: Sequence[Rate], cost: float) -> Decision:
    """All or nothing over several buckets at their current levels: allowed when each holds `cost`;
    otherwise the wait until every one does (the longest), and which bucket needs it."""
    wait, denied = 0.0, -1
    for i, (level, rate) in enumerate(zip(levels, rates, strict=True)):
        if level < cost:
            w = (cost - level) / rate.per_second
            if w > wait:
                wait, denied = w, i
    if denied >= 0:
        return Decision(False, wait, denied)
    return Decision(True)


# ---- adapters --------------------------------------------------------------------------------------


class Limiter(Protocol):
    name: str

    async def acquire(self, buckets: Sequence[Bucket], cost: float = 1.0) -> Decision: ...

    async def count(self, quotas: Sequence[Quota], ttl_s: int) -> int:
        """Add one to every quota's counter when each stays within its limit; returns the index of the
        first quota that would not (nothing is counted then), or -1. Counters expire after `ttl_s`."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryLimiter:
    """Buckets in this process: exact for one gateway; with N replicas each allows the full rate. The
    least recently used buckets beyond `max_buckets` are forgotten (they come back full)."""

    name = "memory"

    def __init__(self, max_buckets: int = 65536, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: LRUCache[str, tuple[float, float]] = LRUCache(max_buckets)
        # A period's key holds its period, so an old period's counter is simply never read again.
        self._counts: LRUCache[str, int] = LRUCache(max_buckets)

    async def acquire(self, buckets: Sequence[Bucket], cost: float = 1.0) -> Decision:
        now = self._clock()
        levels = []
        for b in buckets:
            tokens, last = self._state.get(b.key, (None, None))
            levels.append(refill(tokens, last, now, b.rate))
        decision = settle(levels, [b.rate for b in buckets], cost)
        if decision.allowed:
            for b, level in zip(buckets, levels, strict=True):
                self._state[b.key] = (level - cost, now)
        return decision

    async def count(self, quotas: Sequence[Quota], ttl_s: int) -> int:
        for i, q in enumerate(quotas):
            if self._counts.get(q.key, 0) + 1 > q.limit:
                return i
        for q in quotas:
            self._counts[q.key] = self._counts.get(q.key, 0) + 1
        return -1

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._state.clear()
        self._counts.clear()


# The same arithmetic as refill + settle, atomically, on Redis's clock.
# KEYS = bucket keys; ARGV[1] = cost, then per bucket: per_second, burst.
# Returns {allowed (0/1), wait in seconds (a string: Lua numbers come back truncated to integers),
# denied bucket (1-based)}.
# tostring keeps 14 significant digits: a stored timestamp is exact to 0.1 ms, which is plenty.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local levels = {}
local wait, denied = 0, 0
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
  local tokens, ts = tonumber(s[1]), tonumber(s[2])
  if tokens == nil or ts == nil then
    tokens = burst
  else
    tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
  end
  levels[i] = tokens
  if tokens < cost then
    local w = (cost - tokens) / rate
    if w > wait then wait, denied = w, i end
  end
end
if denied > 0 then return {0, tostring(wait), denied} end
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - cost), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(burst / rate * 1000) + 1000)
end
return {1, '0', 0}
"""


# Quotas, atomically: KEYS = counters; ARGV[1] = ttl in seconds, then one limit per key.
# Returns the 1-based index of the first counter that would pass its limit (nothing counted), or 0.
_COUNT_LUA = """
for i = 1, #KEYS do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n + 1 > tonumber(ARGV[i + 1]) then return i end
end
for i = 1, #KEYS do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[1]))
end
return 0
"""


class RedisLimiter:
    """Buckets in Redis, shared by every gateway replica (one Lua script per call). Fails open."""

    name = "redis"

    def __init__(self, url: str, prefix: str, timeout_s: float, retry_after_s: float) -> None:
        self._prefix = prefix
        self._skip = SkipWindow(retry_after_s)
        self._redis = fail_fast_client(url, timeout_s)
        self._acquire = self._redis.register_script(_ACQUIRE_LUA)
        self._count = self._redis.register_script(_COUNT_LUA)

    def _failed(self, op: str, exc: BaseException) -> None:
        if self._skip.failed():
            log.warning(
                "rate limiter's redis unavailable: limits are not enforced (failing open)",
                op=op,
                error=repr(exc),
                retry_after_s=self._skip.retry_after_s,
            )

    def _ok(self) -> None:
        if self._skip.ok():
            log.info("rate limiter's redis is back: limits are enforced again")

    async def acquire(self, buckets: Sequence[Bucket], cost: float = 1.0) -> Decision:
        if not buckets:
            return Decision(True)
        if not self._skip.usable():
            FAILED_OPEN.inc()
            return Decision(True)
        args: list[float] = [cost]
        for b in buckets:
            args += [b.rate.per_second, b.rate.burst]
        try:
            allowed, wait, denied = await self._acquire(
                keys=[self._prefix + b.key for b in buckets], args=args
            )
        except Exception as exc:  # any Redis failure: fail open
            self._failed("acquire", exc)
            FAILED_OPEN.inc()
            return Decision(True)
        self._ok()
        if int(allowed):
            return Decision(True)
        return Decision(False, float(wait), int(denied) - 1)

    async def count(self, quotas: Sequence[Quota], ttl_s: int) -> int:
        if not quotas:
            return -1
        if not self._skip.usable():
            FAILED_OPEN.inc()
            return -1
        try:
            over = await self._count(
                keys=[self._prefix + q.key for q in quotas], args=[ttl_s, *(q.limit for q in quotas)]
            )
        except Exception as exc:  # any Redis failure: fail open
            self._failed("count", exc)
            FAILED_OPEN.inc()
            return -1
        self._ok()
        return int(over) - 1

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
        await self._redis.aclose()


# ---- the gate --------------------------------------------------------------------------------------


class RateLimited(ResourceExhausted):
    """RESOURCE_EXHAUSTED whose trailing metadata carries `retry-after-ms` (the interceptor adds it)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.trailing_metadata: tuple[tuple[str, str], ...] = (
            (RETRY_AFTER_HEADER, str(max(1, math.ceil(retry_after_s * 1000)))),
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """The configured rates; None = unlimited."""

    search_tenant: Rate | None = None
    search_caller: Rate | None = None
    ingest_tenant: Rate | None = None
    ingest_caller: Rate | None = None
    ingest_daily_tenant: int | None = None  # ingest items per UTC day
    ingest_daily_caller: int | None = None


DAY_S = 86400


def seconds_to_utc_midnight(now: float) -> float:
    """Until the next 00:00 UTC (Unix time has no leap seconds, so days are DAY_S long)."""
    return DAY_S - now % DAY_S


_WHAT = {"search": "searches", "ingest": "ingest items"}


def _fmt(x: float) -> str:
    return f"{x:g}"


class RateLimits:
    """The gateway's gate: one tenant bucket and one caller bucket per kind of work (search, ingest)."""

    def __init__(self, limiter: Limiter, limits: Limits, wall_clock: Callable[[], float] = time.time) -> None:
        self.limiter = limiter
        self.limits = limits
        self._wall_clock = wall_clock

    async def search(self, tenant: str, caller: str) -> None:
        await self._check("search", tenant, caller, self.limits.search_tenant, self.limits.search_caller)

    async def ingest_item(self, tenant: str, caller: str) -> None:
        await self._check("ingest", tenant, caller, self.limits.ingest_tenant, self.limits.ingest_caller)
        await self._daily_ingest(tenant, caller)

    async def _daily_ingest(self, tenant: str, caller: str) -> None:
        quotas, scopes, whose = [], [], []
        now = self._wall_clock()
        day = time.strftime("%Y%m%d", time.gmtime(now))
        if self.limits.ingest_daily_tenant is not None:
            quotas.append(Quota(f"quota:ingest:{day}:t:{tenant}", self.limits.ingest_daily_tenant))
            scopes.append("tenant_daily_quota")
            whose.append(f"tenant {tenant!r}")
        if self.limits.ingest_daily_caller is not None:
            quotas.append(Quota(f"quota:ingest:{day}:c:{tenant}:{caller}", self.limits.ingest_daily_caller))
            scopes.append("caller_daily_quota")
            whose.append(f"caller {caller!r} of tenant {tenant!r}")
        if not quotas:
            return
        over = await self.limiter.count(quotas, ttl_s=2 * DAY_S)
        if over < 0:
            return
        RATE_LIMITED.labels("ingest", scopes[over]).inc()
        wait = seconds_to_utc_midnight(now)
        raise RateLimited(
            f"daily ingest quota of {quotas[over].limit} items for {whose[over]} is used up for today "
            f"(UTC); retry after {wait:.0f} s, at 00:00 UTC",
            wait,
        )

    async def _check(
        self, kind: str, tenant: str, caller: str, per_tenant: Rate | None, per_caller: Rate | None
    ) -> None:
        buckets, scopes, whose = [], [], []
        if per_tenant is not None:
            buckets.append(Bucket(f"{kind}:t:{tenant}", per_tenant))
            scopes.append("tenant")
            whose.append(f"tenant {tenant!r}")
        if per_caller is not None:
            buckets.append(Bucket(f"{kind}:c:{tenant}:{caller}", per_caller))
            scopes.append("caller")
            whose.append(f"caller {caller!r} of tenant {tenant!r}")
        if not buckets:
            return
        decision = await self.limiter.acquire(buckets)
        if decision.allowed:
            return
        rate = buckets[decision.denied].rate
        RATE_LIMITED.labels(kind, scopes[decision.denied]).inc()
        wait = math.ceil(decision.retry_after_s * 1000) / 1000
        raise RateLimited(
            f"rate limit of {_fmt(rate.per_second)} {_WHAT[kind]}/s (burst {_fmt(rate.burst)}) for "
            f"{whose[decision.denied]} exceeded; retry after {_fmt(wait)} s",
            decision.retry_after_s,
        )


def make_limiter(
    backend: str, redis_url: str, prefix: str, timeout_s: float, retry_after_s: float, max_buckets: int
) -> Limiter:
    if backend == "redis":
        return RedisLimiter(redis_url, prefix, timeout_s, retry_after_s)
    return MemoryLimiter(max_buckets)
