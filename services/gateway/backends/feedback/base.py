"""The feedback store's protocol: what RecordFeedback and the search flow need of durable storage.

A store keeps these, all scoped by tenant:
- search records (`SearchRecord`: tenant, arm, the page's asset ids and ranks, a signing secret), one
  per distinct page a gateway served, for the TTL the flow gives, so an event can name its search and
  cannot name another tenant's;
- events, one per (tenant, event_id), forever (the store, not the caller, makes RecordFeedback
  idempotent: a second put of the same id answers "duplicate" and changes nothing), and per search_id
  whether it has had a click (for the searches-with-a-click count);
- per-arm totals, updated in the same atomic step as the event insert, so a retried event can never
  count twice: searches served (added by the flow in batches), searches with at least one click,
  clicks, the sum of 1/rank of clicks, and events per kind;
- per caller (tenant, principal subject), the asset ids of its most recent clicks, bounded (the
  optional preference boost reads them: services/gateway/preferences.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.gateway.domain import ArmTotals, SearchRecord, StoredFeedback


@dataclass(frozen=True)
class PutResult:
    recorded: bool  # False: the event id was already stored (nothing changed)
    first_click: bool = False  # this click is the first one recorded for its search


class FeedbackStore(Protocol):
    name: str

    async def record_searches(
        self, records: Sequence[SearchRecord], ttl_s: float, served: Mapping[str, int]
    ) -> None:
        """Keep every record for `ttl_s` seconds (replacing one of the same key) and add `served`
        (searches served per arm) to the arms' totals, in one atomic write (one transaction or
        pipeline): all or none."""
        ...

    async def get_search(self, tenant: str, key: str) -> SearchRecord | None:
        """The tenant's record under `key`, or None (never written, expired, or another tenant's)."""
        ...

    async def put(self, event: StoredFeedback, search_ttl_s: float) -> PutResult:
        """Store the event once; a click is its search_id's first when none was recorded for that
        search_id in the last `search_ttl_s`."""
        ...

    async def recent_clicks(self, tenant: str, caller: str) -> list[str]:
        """The distinct asset ids the caller clicked most recently, newest first (at most the store's
        bound)."""
        ...

    async def arm_totals(self) -> dict[str, ArmTotals]:
        """Totals of every arm that served a search or got an event."""
        ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...
