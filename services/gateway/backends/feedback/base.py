"""The feedback store's protocol: what RecordFeedback and the search flow need of durable storage.

A store keeps three things, all scoped by tenant:
- search records (`SearchRecord`: tenant, arm, the page's asset ids and ranks) for `search_ttl_s`, so an
  event can name its search by `search_id` and cannot name another tenant's;
- events, one per (tenant, event_id), forever (the store, not the caller, makes RecordFeedback
  idempotent: a second put of the same id answers "duplicate" and changes nothing);
- per-arm totals, updated in the same atomic step as the event insert, so a retried event can never
  count twice: searches served, searches with at least one click, clicks, the sum of 1/rank of clicks,
  and events per kind;
- per caller (tenant, principal subject), the asset ids of its most recent clicks, bounded (the
  optional preference boost reads them: services/gateway/preferences.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.gateway.domain import ArmTotals, SearchRecord, StoredFeedback


@dataclass(frozen=True)
class PutResult:
    recorded: bool  # False: the event id was already stored (nothing changed)
    first_click: bool = False  # this click is the first one recorded for its search


class FeedbackStore(Protocol):
    name: str

    async def record_search(self, record: SearchRecord, ttl_s: float) -> None:
        """Keep `record` for `ttl_s` seconds and count one search served for its arm."""
        ...

    async def record_searches(self, records: Sequence[SearchRecord], ttl_s: float) -> None:
        """`record_search` of every record in one atomic write (one transaction or pipeline): the
        searches served concurrently are stored together, all or none."""
        ...

    async def get_search(self, tenant: str, search_id: str) -> SearchRecord | None:
        """The tenant's record of `search_id`, or None (never issued, expired, or another tenant's)."""
        ...

    async def put(self, event: StoredFeedback) -> PutResult: ...

    async def recent_clicks(self, tenant: str, caller: str) -> list[str]:
        """The distinct asset ids the caller clicked most recently, newest first (at most the store's
        bound)."""
        ...

    async def arm_totals(self) -> dict[str, ArmTotals]:
        """Totals of every arm that served a search or got an event."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...
