"""The feedback flow: a search_id for every served page, and RecordFeedback.

    served page ──> its SearchRecord (tenant, arm, page ranks, a secret), written once per distinct
                    page and reused by every search showing that page again (a page-cache hit writes
                    nothing) ──> search_id `<record key>.<nonce>.<signature by the record's secret>`
    RecordFeedback: authorise -> validate each event -> the tenant's record of its search_id, and its
                    signature (absent, expired, forged or another tenant's: NOT_FOUND, the same words
                    for all) -> the asset must be a result of that search -> store.put (idempotent
                    per event_id) -> per-arm metrics

A record's key is a digest of (this process's salt, tenant, arm, ranks): replicas keep their own
records, so one never replaces another's secret. A record is kept for twice feedback_search_ttl_s
and reused for one TTL after its write, so every search_id stays valid for at least the TTL. The
searches-served totals are added to the store in batches (with the next record write, or at most
`count_flush_s` later): a crash loses at most that long's counts, never a record.

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

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import replace

import structlog
from cachetools import LRUCache
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
        self,
        store: FeedbackStore,
        policy: Policy,
        search_ttl_s: float,
        record_retry_after_s: float,
        pages_remembered: int = 10_000,
        count_flush_s: float = 1.0,
    ) -> None:
        self.store = store
        self.policy = policy
        self.search_ttl_s = search_ttl_s
        self.count_flush_s = count_flush_s
        # The store's totals as last read, plus this process's searches since: what the gauges show.
        self._totals: dict[str, ArmTotals] = {}
        # After a failed record, searches skip the store for a while: an outage costs one store
        # timeout per window, not one per search.
        self._skip = SkipWindow(record_retry_after_s)
        # Group commit: the records of searches served while one write is in flight are written
        # together by the next one (each search waits for its own record before its search_id goes
        # out). A None item only carries the unflushed counts.
        self._records: MicroBatcher[SearchRecord | None, None] = MicroBatcher(
            self._write, max_items=MAX_RECORDS_PER_WRITE, wait_s=0.0, name="search records"
        )
        # This process's records: their keys and secrets derive from it, so a record written again
        # (after a TTL, or after it was forgotten here) keeps its secret and its earlier ids.
        self._salt = secrets.token_bytes(32)
        # Records this process stored: key -> (its secret, when written: time.monotonic()).
        self._stored: LRUCache[str, tuple[str, float]] = LRUCache(max(1, pages_remembered))
        # Metric children per arm (arms are the experiments file's): labels() costs a lookup and a lock.
        self._served_counters: dict[str, Counter] = {}
        self._gauges: dict[str, tuple[Gauge, Gauge]] = {}
        self._unflushed: Tally[str] = Tally()  # searches served per arm, not yet in the store
        self._flush: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Future[None] | None = None

    async def _write(self, records: list[SearchRecord | None]) -> list[None]:
        served, self._unflushed = self._unflushed, Tally()
        try:
            await self.store.record_searches(
                [r for r in records if r is not None], 2 * self.search_ttl_s, served
            )
        except BaseException:
            self._unflushed.update(served)  # counted with a later write
            raise
        return [None] * len(records)

    # ---- the search side ------------------------------------------------------------------------

    async def served(
        self, principal: Principal, action: str, assignment: Assignment, page: SearchPage
    ) -> str:
        """A search_id naming the served page's record (stored first when this process has not
        stored it in the last TTL); "" when the store failed: the search still succeeds, only
        feedback for it is impossible."""
        arm = assignment.arm.name
        served = self._served_counters.get(arm)
        if served is None:
            served = self._served_counters[arm] = SEARCHES_SERVED.labels(arm)
        served.inc()
        self._show(arm, replace(self._totals.get(arm, ArmTotals()), searches=self._searches(arm) + 1))
        search_id = ""
        if not self._skip.usable():
            SEARCH_RECORD_FAILED.inc()
        else:
            try:
                search_id = await self._page_search_id(principal.tenant, arm, page)
                self._skip.ok()
            except DomainError as exc:
                SEARCH_RECORD_FAILED.inc()
                self._skip.failed()
                log.warning("search served without a search_id", detail=exc.message)
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

    async def _page_search_id(self, tenant: str, arm: str, page: SearchPage) -> str:
        ranks = {r.asset.asset_id: i + 1 for i, r in enumerate(page.results)}
        key = self._record_key(tenant, arm, ranks)
        stored = self._stored.get(key)
        now = time.monotonic()
        self._unflushed[arm] += 1
        if stored is None or now - stored[1] > self.search_ttl_s:
            secret = self._record_secret(key)
            await self._records.submit(SearchRecord(key, tenant, arm, ranks, secret))
            self._stored[key] = (secret, now)
        else:
            secret = stored[0]
            self._flush_later()
        nonce = secrets.token_urlsafe(9)
        return f"{key}.{nonce}.{_signature(secret, key, nonce)}"

    def _record_key(self, tenant: str, arm: str, ranks: dict[str, int]) -> str:
        page = "\x00".join((tenant, arm, *ranks)).encode()
        digest = hashlib.blake2b(page, digest_size=16, key=self._salt).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def _record_secret(self, key: str) -> str:
        mac = hmac.new(self._salt, b"secret:" + key.encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(mac).decode()

    def _flush_later(self) -> None:
        """Have the unflushed counts written within count_flush_s (the next record write takes them
        earlier)."""
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.count_flush_s, self._flush_now)

    def _flush_now(self) -> None:
        self._flush = None
        if self._unflushed:
            self._flushing = asyncio.ensure_future(self._flush_counts())

    async def _flush_counts(self) -> None:
        try:
            await self._records.submit(None)
        except DomainError as exc:  # kept for the next write
            log.warning("searches served not counted yet", detail=exc.message)
            self._flush_later()

    async def flush(self) -> None:
        """Write the unflushed counts now (before reading the store's totals)."""
        if self._unflushed:
            await self._records.submit(None)

    async def close(self) -> None:
        """Write the unflushed counts (a graceful stop loses none; the store may be down: logged)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        try:
            await self.flush()
        except DomainError as exc:
            log.warning("searches served not counted at stop", detail=exc.message)

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
            searches[event.search_id] = await self._search_of(principal.tenant, event.search_id)
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
        put = await self.store.put(stored, self.search_ttl_s)
        if not put.recorded:
            return FeedbackAck(event.event_id, FeedbackOutcome.DUPLICATE)
        FEEDBACK_EVENTS.labels(search.arm, kind.value).inc()
        if kind is FeedbackKind.CLICK:
            CLICK_RECIPROCAL_RANK.labels(search.arm).inc(1.0 / rank)
            if put.first_click:
                SEARCHES_CLICKED.labels(search.arm).inc()
        return FeedbackAck(event.event_id, FeedbackOutcome.RECORDED)

    async def _search_of(self, tenant: str, search_id: str) -> SearchRecord | None:
        """The record a search_id names, when its signature is the record's (None otherwise)."""
        key, _, signed = search_id.partition(".")
        nonce, _, signature = signed.partition(".")
        record = await self.store.get_search(tenant, key)
        if record is None:
            return None
        if not record.secret:  # a record written before records were shared: its id is its key
            return record if not signed else None
        if not hmac.compare_digest(signature, _signature(record.secret, key, nonce)):
            return None
        return record

    async def refresh_gauges(self) -> None:
        """Set the per-arm CTR and MRR gauges from the store's durable totals."""
        await self.flush()
        for arm, totals in (await self.store.arm_totals()).items():
            self._show(arm, totals)

    def _searches(self, arm: str) -> int:
        totals = self._totals.get(arm)
        return totals.searches if totals is not None else 0

    def _show(self, arm: str, totals: ArmTotals) -> None:
        self._totals[arm] = totals
        gauges = self._gauges.get(arm)
        if gauges is None:
            gauges = self._gauges[arm] = (ARM_CTR.labels(arm), ARM_MRR.labels(arm))
        gauges[0].set(totals.click_through_rate)
        gauges[1].set(totals.mrr_of_clicks)


def _signature(secret: str, key: str, nonce: str) -> str:
    mac = hmac.new(secret.encode(), f"{key}.{nonce}".encode(), hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac).decode()


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
