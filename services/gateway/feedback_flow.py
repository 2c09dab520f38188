"""The feedback flow: a search_id for every served page, and RecordFeedback.

    served page ──> SearchRecord (tenant, arm, page ranks) kept for feedback_search_ttl_s ──> search_id
    RecordFeedback: authorise -> validate each event -> the tenant's record of its search_id
                    (absent, expired or another tenant's: NOT_FOUND, the same words for all three)
                    -> the asset must be a result of that search -> store.put (idempotent per event_id)
                    -> per-arm metrics

One event's failure fails that event only (FeedbackAck FAILED with a status number and a message); a
malformed batch (no events, too many) fails the call. The rank that counts for MRR of clicks is the one
the gateway recorded for the asset, not the caller's: a caller may omit rank (0), and a wrong one is
refused rather than believed.

Metrics per arm (process counters, for PromQL rates across replicas):
    gateway_searches_served_total{arm}, gateway_searches_clicked_total{arm},
    gateway_feedback_events_total{arm,kind}, gateway_click_reciprocal_rank_total{arm} (sum of 1/rank)
    CTR           = rate(gateway_searches_clicked_total) / rate(gateway_searches_served_total)
    MRR of clicks = rate(gateway_click_reciprocal_rank_total)
                    / rate(gateway_feedback_events_total{kind="click"})
and the store's durable all-time figures as gauges (gateway_arm_click_through_rate{arm},
gateway_arm_mrr_of_clicks{arm}): read from the store at start and after every RecordFeedback call that
recorded something, and between reads moved by this process's own searches (another replica's searches
show up at the next read).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from dataclasses import replace

import structlog
from prometheus_client import Counter, Gauge

from services.common.batching import MicroBatcher
from services.common.errors import DomainError, InvalidArgument, NotFound, status_number
from services.common.outage import SkipWindow
from services.gateway.auth import Principal
from services.gateway.backends.feedback import FeedbackStore
from services.gateway.domain import (
    ArmTotals,
    FeedbackAck,
    FeedbackEvent,
    FeedbackKind,
    FeedbackOutcome,
    SearchPage,
    SearchRecord,
    StoredFeedback,
)
from services.gateway.experiments import Assignment
from services.gateway.limits import MAX_ASSET_ID_CHARS
from services.gateway.policy import Policy

log = structlog.get_logger("gateway.feedback")

MAX_EVENTS = 1000
# Search records written in one store call at most (a burst of searches is a few batches).
MAX_RECORDS_PER_WRITE = 256
MAX_EVENT_ID_CHARS = 128
MAX_SEARCH_ID_CHARS = 128
MAX_DWELL_MS = 24 * 3600 * 1000
# Clocks of callers' devices run ahead: an event up to this far in the future is taken as now.
FUTURE_SKEW = dt.timedelta(minutes=5)

SEARCHES_SERVED = Counter("gateway_searches_served_total", "Searches served, by experiment arm.", ["arm"])
SEARCHES_CLICKED = Counter(
    "gateway_searches_clicked_total", "Searches whose first click was recorded, by arm.", ["arm"]
)
FEEDBACK_EVENTS = Counter(
    "gateway_feedback_events_total", "Feedback events recorded (duplicates not counted).", ["arm", "kind"]
)
CLICK_RECIPROCAL_RANK = Counter(
    "gateway_click_reciprocal_rank", "Sum of 1/rank over recorded clicks, by arm (MRR numerator).", ["arm"]
)
SEARCH_RECORD_FAILED = Counter(
    "gateway_search_record_failed_total",
    "Searches served without a search_id because the feedback store failed (or was being skipped).",
)
ARM_CTR = Gauge(
    "gateway_arm_click_through_rate",
    "All-time share of an arm's searches with at least one click (from the feedback store).",
    ["arm"],
)
ARM_MRR = Gauge(
    "gateway_arm_mrr_of_clicks",
    "All-time mean reciprocal rank of an arm's clicks (from the feedback store).",
    ["arm"],
)


class FeedbackFlow:
    def __init__(
        self, store: FeedbackStore, policy: Policy, search_ttl_s: float, record_retry_after_s: float
    ) -> None:
        self.store = store
        self.policy = policy
        self.search_ttl_s = search_ttl_s
        # The store's totals as last read, plus this process's searches since: what the gauges show.
        self._totals: dict[str, ArmTotals] = {}
        # After a failed record, searches skip the store for a while: an outage costs one store
        # timeout per window, not one per search.
        self._skip = SkipWindow(record_retry_after_s)
        # Group commit: the searches served while one write is in flight are written together by the
        # next one (each still waits for its own record to be stored before its search_id goes out).
        self._records: MicroBatcher[SearchRecord, None] = MicroBatcher(
            self._record_searches, max_items=MAX_RECORDS_PER_WRITE, wait_s=0.0, name="search records"
        )

    async def _record_searches(self, records: list[SearchRecord]) -> list[None]:
        await self.store.record_searches(records, self.search_ttl_s)
        return [None] * len(records)

    # ---- the search side ------------------------------------------------------------------------

    async def served(
        self, principal: Principal, action: str, assignment: Assignment, page: SearchPage
    ) -> str:
        """Record the served page under a fresh search_id (returned; "" when the store failed: the
        search still succeeds, only feedback for it is impossible)."""
        arm = assignment.arm.name
        SEARCHES_SERVED.labels(arm).inc()
        self._show(arm, replace(self._totals.get(arm, ArmTotals()), searches=self._searches(arm) + 1))
        search_id = secrets.token_urlsafe(18)
        record = SearchRecord(
            search_id, principal.tenant, arm, {r.asset.asset_id: i + 1 for i, r in enumerate(page.results)}
        )
        if not self._skip.usable():
            SEARCH_RECORD_FAILED.inc()
            search_id = ""
        else:
            try:
                await self._records.submit(record)
                self._skip.ok()
            except DomainError as exc:
                SEARCH_RECORD_FAILED.inc()
                self._skip.failed()
                log.warning("search served without a search_id", detail=exc.message)
                search_id = ""
        self.policy.audit.record(
            principal,
            action,
            "allow",
            "experiment arm",
            arm=arm,
            experiment=assignment.experiment,
            unit=assignment.unit,
            search_id=search_id,
        )
        return search_id

    # ---- RecordFeedback -------------------------------------------------------------------------

    async def record(
        self, principal: Principal, events: Sequence[FeedbackEvent], now: dt.datetime | None = None
    ) -> list[FeedbackAck]:
        action = "record_feedback"
        self.policy.authorize(principal, action)
        if not 1 <= len(events) <= MAX_EVENTS:
            raise InvalidArgument(f"events must hold 1-{MAX_EVENTS} events, got {len(events)}")
        now = now or dt.datetime.now(dt.UTC)
        searches: dict[str, SearchRecord | None] = {}
        acks: list[FeedbackAck] = []
        for event in events:
            try:
                acks.append(await self._record_one(principal, event, now, searches))
            except DomainError as exc:
                if not isinstance(exc, InvalidArgument | NotFound):
                    raise  # the store is down: the whole call fails UNAVAILABLE, callers retry it
                acks.append(
                    FeedbackAck(event.event_id, FeedbackOutcome.FAILED, status_number(exc.code), exc.message)
                )
        recorded = sum(a.outcome is FeedbackOutcome.RECORDED for a in acks)
        self.policy.audit.record(
            principal,
            action,
            "allow",
            "feedback recorded",
            recorded=recorded,
            duplicate=sum(a.outcome is FeedbackOutcome.DUPLICATE for a in acks),
            failed=sum(a.outcome is FeedbackOutcome.FAILED for a in acks),
        )
        if recorded:
            await self.refresh_gauges()
        return acks

    async def _record_one(
        self,
        principal: Principal,
        event: FeedbackEvent,
        now: dt.datetime,
        searches: dict[str, SearchRecord | None],
    ) -> FeedbackAck:
        kind, occurred_at = _validated(event, now)
        if event.search_id not in searches:
            searches[event.search_id] = await self.store.get_search(principal.tenant, event.search_id)
        search = searches[event.search_id]
        if search is None:
            # The same words whether the id never existed, expired, or is another tenant's.
            raise NotFound(
                f"search_id {event.search_id!r} is not a search of tenant {principal.tenant!r} from the "
                f"last {self.search_ttl_s:g} s; send feedback for a search_id this tenant received"
            )
        rank = search.ranks.get(event.asset_id)
        if rank is None:
            raise InvalidArgument(
                f"asset {event.asset_id!r} was not a result of search {event.search_id!r}; feedback names "
                "a result of the page that search_id came with"
            )
        if event.rank and event.rank != rank:
            raise InvalidArgument(
                f"rank {event.rank} does not match asset {event.asset_id!r}'s rank {rank} on that page; "
                "send the 1-based rank on the page, or 0 to let the server fill it in"
            )
        stored = StoredFeedback(
            tenant=principal.tenant,
            event_id=event.event_id,
            kind=kind,
            search_id=event.search_id,
            asset_id=event.asset_id,
            arm=search.arm,
            rank=rank,
            dwell_ms=event.dwell_ms,
            rating=event.rating,
            occurred_at=occurred_at,
            caller=principal.subject,
        )
        put = await self.store.put(stored)
        if not put.recorded:
            return FeedbackAck(event.event_id, FeedbackOutcome.DUPLICATE)
        FEEDBACK_EVENTS.labels(search.arm, kind.value).inc()
        if kind is FeedbackKind.CLICK:
            CLICK_RECIPROCAL_RANK.labels(search.arm).inc(1.0 / rank)
            if put.first_click:
                SEARCHES_CLICKED.labels(search.arm).inc()
        return FeedbackAck(event.event_id, FeedbackOutcome.RECORDED)

    async def refresh_gauges(self) -> None:
        """Set the per-arm CTR and MRR gauges from the store's durable totals."""
        for arm, totals in (await self.store.arm_totals()).items():
            self._show(arm, totals)

    def _searches(self, arm: str) -> int:
        totals = self._totals.get(arm)
        return totals.searches if totals is not None else 0

    def _show(self, arm: str, totals: ArmTotals) -> None:
        self._totals[arm] = totals
        ARM_CTR.labels(arm).set(totals.click_through_rate)
        ARM_MRR.labels(arm).set(totals.mrr_of_clicks)


def _validated(event: FeedbackEvent, now: dt.datetime) -> tuple[FeedbackKind, dt.datetime]:
    """The event's kind and when it happened, or INVALID_ARGUMENT naming the field to fix."""
    if event.invalid:
        raise InvalidArgument(event.invalid)
    if not 1 <= len(event.event_id) <= MAX_EVENT_ID_CHARS:
        raise InvalidArgument(f"event_id must be 1-{MAX_EVENT_ID_CHARS} characters")
    if event.kind is None:
        raise InvalidArgument("kind must be FEEDBACK_KIND_CLICK, FEEDBACK_KIND_DWELL or FEEDBACK_KIND_RATING")
    if not event.search_id:
        raise InvalidArgument("search_id is required: the search_id of the response the result came from")
    if len(event.search_id) > MAX_SEARCH_ID_CHARS:
        raise InvalidArgument(f"search_id must be at most {MAX_SEARCH_ID_CHARS} characters")
    if not 1 <= len(event.asset_id) <= MAX_ASSET_ID_CHARS:
        raise InvalidArgument(f"asset_id must be 1-{MAX_ASSET_ID_CHARS} characters")
    if event.rank < 0:
        raise InvalidArgument(f"rank must be the 1-based rank on the page (or 0: unknown), got {event.rank}")
    if event.kind is FeedbackKind.DWELL:
        if not 1 <= event.dwell_ms <= MAX_DWELL_MS:
            raise InvalidArgument(
                f"dwell_ms must be 1-{MAX_DWELL_MS} for a dwell event, got {event.dwell_ms}"
            )
    elif event.dwell_ms:
        raise InvalidArgument("dwell_ms is only for FEEDBACK_KIND_DWELL events; leave it 0")
    if event.kind is FeedbackKind.RATING:
        if not 1 <= event.rating <= 5:
            raise InvalidArgument(f"rating must be 1-5 for a rating event, got {event.rating}")
    elif event.rating:
        raise InvalidArgument("rating is only for FEEDBACK_KIND_RATING events; leave it 0")
    occurred_at = event.occurred_at or now
    if occurred_at > now + FUTURE_SKEW:
        raise InvalidArgument(
            f"occurred_at {occurred_at.isoformat()} is in the future; send when the event happened (UTC)"
        )
    return event.kind, min(occurred_at, now)
