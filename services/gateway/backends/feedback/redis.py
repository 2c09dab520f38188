"""Redis feedback store: the real stack's (shared by every gateway replica; durable with the stack's
append-only file, `--appendonly yes --appendfsync always`).

Keys (prefix P, tenant written as "<length>:<name>" so no tenant name can spell another's key):
    P s:<tenant>:<key>         hash {arm, ranks (JSON), secret}      a served page's record; expires
    P k:<tenant>:<search_id>   "1" once the search had a click        expires after the search TTL
    P e:<tenant>:<event_id>    the event as JSON                      kept
    P arm:<arm>                hash of the arm's totals               kept
    P arms                     set of arm names                       kept
    P c:<tenant>:<caller>      list of the caller's clicked asset ids  the newest `recent_clicks_kept`
An event's insert and its counters run in one Lua script (`_PUT_LUA`): SET NX decides whether the event
is new, and only a new event touches the counters, so a retried event never counts twice.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, cast

import structlog
from redis.exceptions import RedisError

from services.common.errors import Unavailable
from services.common.redis import fail_fast_client
from services.gateway.backends.feedback.base import PutResult
from services.gateway.domain import ArmTotals, FeedbackKind, SearchRecord, StoredFeedback

log = structlog.get_logger("gateway.feedback")

UNAVAILABLE = "the feedback store is unavailable; retry the events later (they are idempotent)"

# KEYS: event, the search_id's click marker, arm totals, arm set, the caller's recent clicks ("" key
# unused: no caller).
# ARGV: event JSON, kind, is click ("1"/"0"), 1/rank, arm, asset id, recent clicks kept, marker TTL ms.
# Returns {recorded (0/1), first click of its search (0/1)}.
_PUT_LUA = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then return {0, 0} end
redis.call('SADD', KEYS[4], ARGV[5])
redis.call('HINCRBY', KEYS[3], 'events:' .. ARGV[2], 1)
if ARGV[3] ~= '1' then return {1, 0} end
if ARGV[7] ~= '0' then
  redis.call('LPUSH', KEYS[5], ARGV[6])
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[7]) - 1)
end
redis.call('HINCRBY', KEYS[3], 'clicks', 1)
redis.call('HINCRBYFLOAT', KEYS[3], 'reciprocal_rank_sum', ARGV[4])
local first = 0
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[8]) then first = 1 end
if first == 1 then redis.call('HINCRBY', KEYS[3], 'clicked_searches', 1) end
return {1, first}
"""


def _tenant(tenant: str) -> str:
    return f"{len(tenant)}:{tenant}"


class RedisFeedbackStore:
    name = "redis"

    def __init__(self, url: str, prefix: str, timeout_s: float, recent_clicks_kept: int = 50) -> None:
        self._redis = fail_fast_client(url, timeout_s)
        self._prefix = prefix
        self.recent_clicks_kept = recent_clicks_kept
        self._put_script = self._redis.register_script(_PUT_LUA)

    def _search_key(self, tenant: str, search_id: str) -> str:
        return f"{self._prefix}s:{_tenant(tenant)}:{search_id}"

    def _clicked_key(self, tenant: str, search_id: str) -> str:
        return f"{self._prefix}k:{_tenant(tenant)}:{search_id}"

    def _event_key(self, tenant: str, event_id: str) -> str:
        return f"{self._prefix}e:{_tenant(tenant)}:{event_id}"

    def _clicks_key(self, tenant: str, caller: str) -> str:
        return f"{self._prefix}c:{_tenant(tenant)}:{caller}"

    def _arm_key(self, arm: str) -> str:
        return f"{self._prefix}arm:{arm}"

    async def record_searches(
        self, records: Sequence[SearchRecord], ttl_s: float, served: Mapping[str, int]
    ) -> None:
        ttl_ms = max(1, int(ttl_s * 1000))
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for record in records:
                    key = self._search_key(record.tenant, record.search_id)
                    fields = {"arm": record.arm, "ranks": json.dumps(record.ranks), "secret": record.secret}
                    pipe.hset(key, mapping=fields)
                    pipe.pexpire(key, ttl_ms)
                arms = {arm: n for arm, n in served.items() if n}
                if arms:
                    pipe.sadd(f"{self._prefix}arms", *arms)
                for arm, n in arms.items():
                    pipe.hincrby(self._arm_key(arm), "searches", n)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None

    async def get_search(self, tenant: str, key: str) -> SearchRecord | None:
        try:
            found = await cast(
                Awaitable[list[Any]],
                self._redis.hmget(self._search_key(tenant, key), ["arm", "ranks", "secret"]),
            )
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        arm, ranks, secret = found
        if arm is None or ranks is None:
            return None
        parsed = json.loads(ranks)
        ranked = {str(k): int(v) for k, v in parsed.items()}
        return SearchRecord(key, tenant, arm.decode(), ranked, secret.decode() if secret else "")

    async def put(self, e: StoredFeedback, search_ttl_s: float) -> PutResult:
        doc = json.dumps(
            {
                "kind": e.kind.value,
                "search_id": e.search_id,
                "asset_id": e.asset_id,
                "arm": e.arm,
                "rank": e.rank,
                "dwell_ms": e.dwell_ms,
                "rating": e.rating,
                "occurred_at": e.occurred_at.isoformat(),
            }
        )
        keys = [
            self._event_key(e.tenant, e.event_id),
            self._clicked_key(e.tenant, e.search_id),
            self._arm_key(e.arm),
            f"{self._prefix}arms",
            self._clicks_key(e.tenant, e.caller),
        ]
        click = e.kind is FeedbackKind.CLICK
        args = [
            doc,
            e.kind.value,
            "1" if click else "0",
            repr(1.0 / e.rank) if click else "0",
            e.arm,
            e.asset_id,
            str(self.recent_clicks_kept if e.caller else 0),
            str(max(1, int(search_ttl_s * 1000))),
        ]
        try:
            recorded, first = await self._put_script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        return PutResult(recorded=bool(recorded), first_click=bool(first))

    async def recent_clicks(self, tenant: str, caller: str) -> list[str]:
        try:
            raw = await cast(
                Awaitable[list[bytes]],
                self._redis.lrange(self._clicks_key(tenant, caller), 0, self.recent_clicks_kept - 1),
            )
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        return list(dict.fromkeys(a.decode() for a in raw))

    async def arm_totals(self) -> dict[str, ArmTotals]:
        try:
            members = await cast(Awaitable[set[bytes]], self._redis.smembers(f"{self._prefix}arms"))
            arms = sorted(a.decode() for a in members)
            out: dict[str, ArmTotals] = {}
            for arm in arms:
                raw = await cast(Awaitable[dict[bytes, bytes]], self._redis.hgetall(self._arm_key(arm)))
                fields = {k.decode(): v.decode() for k, v in raw.items()}
                out[arm] = ArmTotals(
                    searches=int(fields.get("searches", 0)),
                    clicked_searches=int(fields.get("clicked_searches", 0)),
                    clicks=int(fields.get("clicks", 0)),
                    reciprocal_rank_sum=float(fields.get("reciprocal_rank_sum", 0.0)),
                    events={
                        k.removeprefix("events:"): int(v)
                        for k, v in fields.items()
                        if k.startswith("events:")
                    },
                )
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        return out

    async def healthy(self) -> bool:
        try:
            return bool(await cast(Awaitable[bool], self._redis.ping()))
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        await self._redis.aclose()

    @staticmethod
    def _unavailable(exc: BaseException) -> Unavailable:
        log.warning("feedback store call failed", error=type(exc).__name__, detail=str(exc))
        return Unavailable(UNAVAILABLE)
