"""Deferred safety + OCR analysis: the worker behind ingest's acknowledgement (analysis_mode=deferred).

The durable queue is the index itself: an item is acknowledged once its original is in the object
store and it is indexed with analysis state PENDING, which the search service keeps out of every query
and read. This worker analyses each pending asset from its stored original, stores its thumbnail, and
writes the safety labels/score, the OCR text and state ANALYSED (the asset becomes visible, its OCR text
keyword-searchable) in one upsert through the ingest flow's batches.

- Fast path: the ingest flow hands each item stored pending to `submit` after its write.
- Resume: at start, and whenever the worker is idle for `scan_interval_s`, it lists pending assets
  (ListPendingAnalysis) and takes what it does not hold yet, so a gateway killed with work queued
  resumes every pending asset on restart (and an item dropped from a full memory queue is found).
- Fail-closed: an analysis that raises is retried with backoff (`attempts`, `backoff_s` doubling);
  an image that still cannot be analysed is written with state FAILED (invisible for good, counted in
  `gateway_analysis_items_total{outcome="failed"}` and logged); re-sending its bytes queues it again.
  A backend that cannot be reached (object store, search service) leaves the asset PENDING for the
  next scan: nothing is ever shown unanalysed.
- Races: the record is written under the ingest flow's per-asset lock, over what was read under it,
  and only while the stored asset still has the analysed bytes and is PENDING; a re-ingest with new
  bytes in between gets (and is queued with) its own analysis.

Several gateway replicas may analyse the same pending asset after a restart; the write is idempotent.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

import structlog
from prometheus_client import Counter, Gauge, Histogram

from services.common.errors import DeadlineExceeded, DomainError, NotFound, Unavailable
from services.gateway.analysis import Analysis, decode_rgb
from services.gateway.backends.base import Analyzer, SearchClient
from services.gateway.domain import AnalysisState, ImageVariant, PendingAnalysis
from services.gateway.images import AssetImages, ImageCorrupt
from services.gateway.ingest_flow import IngestFlow, WriteUnconfirmed
from services.gateway.reads import Reads
from services.gateway.settings import GatewaySettings

log = structlog.get_logger("analysis_queue")

ANALYSIS_ITEMS = Counter(
    "gateway_analysis_items_total",
    "Deferred analyses by outcome: analysed (now visible), failed (invisible for good: the image could "
    "not be analysed), retried (a try failed), postponed (a backend was unreachable: left pending for "
    "the next scan), superseded (deleted or re-ingested meanwhile).",
    ["outcome"],
)
TIME_TO_VISIBLE = Histogram(
    "gateway_analysis_time_to_visible_seconds",
    "From an item's acknowledgement (or its write, for items resumed from the index) to its analysis "
    "being recorded (visible).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)
QUEUED = Gauge("gateway_analysis_queued", "Pending analyses held by this gateway (queued or running).")


@dataclass(frozen=True)
class AnalysisQueueConfig:
    paused: bool = False
    attempts: int = 4
    backoff_s: float = 0.5
    scan_interval_s: float = 30.0
    queue_max: int = 10_000
    workers: int = 2
    scan_batch: int = 500

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> AnalysisQueueConfig:
        return cls(
            paused=s.analysis_paused,
            attempts=s.analysis_retry_attempts,
            backoff_s=s.analysis_retry_backoff_s,
            scan_interval_s=s.analysis_scan_interval_s,
            queue_max=s.analysis_queue_max,
            # One more than the analysis threads: the next image is read while one is analysed.
            workers=s.analysis_threads + 1,
            # Within the search service's batch limit, as every batched call of the ingest flow.
            scan_batch=s.ingest_upsert_batch,
        )


class _Postponed(Exception):
    """A backend was unreachable: the asset stays pending for the next scan."""


class _Unanalysable(Exception):
    """The image cannot be analysed (corrupt, missing, or the detectors keep failing)."""


@dataclass(frozen=True)
class _Job:
    item: PendingAnalysis
    since: float  # wall-clock seconds the item has been waiting from (its acknowledgement or write)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.item.tenant, self.item.asset_id, self.item.content_sha256)


class AnalysisQueue:
    def __init__(
        self,
        search: SearchClient,
        reads: Reads,
        images: AssetImages,
        analyzer: Analyzer,
        flow: IngestFlow,
        config: AnalysisQueueConfig,
    ) -> None:
        self.cfg = config
        self._search = search
        self._reads = reads
        self._images = images
        self._analyzer = analyzer
        self._flow = flow
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._held: set[tuple[str, str, str]] = set()  # queued or running
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()  # set when the last held job finished (time to list again)
        self._scan_full = False  # the last scan filled its page: list again as soon as idle
        self._postponed = False  # an item was left pending since the last scan (do not list at once)

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self.cfg.paused:
            log.warning("deferred analysis is paused: pending assets stay invisible until it runs")
            return
        self._tasks = [asyncio.create_task(self._scan_loop(), name="analysis scan")]
        self._tasks += [
            asyncio.create_task(self._work(), name=f"analysis worker {i}") for i in range(self.cfg.workers)
        ]

    async def close(self) -> None:
        """Stop (queued items stay pending in the index; the next start resumes them)."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def held(self) -> int:
        return len(self._held)

    def submit(self, item: PendingAnalysis, since: float | None = None) -> None:
        """Queue an item stored pending (never blocks; beyond queue_max the next scan finds it)."""
        job = _Job(item, time.time() if since is None else since)
        if job.key in self._held or len(self._held) >= self.cfg.queue_max:
            return
        self._held.add(job.key)
        QUEUED.inc()
        self._idle.clear()
        self._queue.put_nowait(job)

    # ---- resume from the index -------------------------------------------------------------------

    async def _scan_loop(self) -> None:
        while True:
            if not self._held:
                self._postponed = False
                await self._scan()
            if self._scan_full and self._held:
                await self._idle.wait()  # a full page: list the next one as soon as it is done
                if not self._postponed:
                    continue
            await asyncio.sleep(self.cfg.scan_interval_s)

    async def _scan(self) -> None:
        try:
            found = await self._search.pending_analysis(self.cfg.scan_batch)
        except DomainError as exc:
            log.warning("pending analyses could not be listed; next try later", detail=exc.message)
            self._scan_full = False
            return
        self._scan_full = len(found) >= self.cfg.scan_batch
        if found:
            log.info("resuming pending analyses from the index", count=len(found))
        for item in found:
            since = item.updated_at.timestamp() if item.updated_at is not None else None
            self.submit(replace(item, updated_at=None), since)

    # ---- the work --------------------------------------------------------------------------------

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._process(job)
            except asyncio.CancelledError:
                raise
            except Exception:  # never lose the worker; the asset stays pending for the next scan
                log.exception("deferred analysis failed unexpectedly", asset_id=job.item.asset_id)
            finally:
                self._held.discard(job.key)
                QUEUED.dec()
                if not self._held:
                    self._idle.set()

    async def _process(self, job: _Job) -> None:
        item = job.item
        try:
            analysis: Analysis | None = await self._analyse_with_retries(item)
        except _Postponed as exc:
            self._postponed = True
            ANALYSIS_ITEMS.labels("postponed").inc()
            log.warning("deferred analysis postponed", asset_id=item.asset_id, why=str(exc))
            return
        except _Unanalysable as exc:
            analysis = None
            log.error(
                "image could not be analysed: it stays invisible (analysis state failed)",
                asset_id=item.asset_id,
                tenant=item.tenant,
                why=str(exc),
            )
        try:
            recorded = await self._record(item, analysis)
        except (DomainError, WriteUnconfirmed) as exc:
            self._postponed = True
            ANALYSIS_ITEMS.labels("postponed").inc()
            log.warning("deferred analysis left pending", asset_id=item.asset_id, detail=str(exc))
            return
        if not recorded:
            ANALYSIS_ITEMS.labels("superseded").inc()
            return
        if analysis is None:
            ANALYSIS_ITEMS.labels("failed").inc()
            return
        ANALYSIS_ITEMS.labels("analysed").inc()
        TIME_TO_VISIBLE.observe(max(0.0, time.time() - job.since))

    async def _analyse_with_retries(self, item: PendingAnalysis) -> Analysis:
        delay = self.cfg.backoff_s
        for attempt in range(1, self.cfg.attempts + 1):
            try:
                return await self._analyse(item)
            except (_Postponed, _Unanalysable):
                raise
            except Exception as exc:  # a detector error: try again, then give up on the image
                if attempt == self.cfg.attempts:
                    raise _Unanalysable(f"{self.cfg.attempts} tries failed, last: {exc!r}") from exc
                ANALYSIS_ITEMS.labels("retried").inc()
                log.warning("deferred analysis try failed", asset_id=item.asset_id, error=repr(exc))
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _analyse(self, item: PendingAnalysis) -> Analysis:
        try:
            image = await self._images.read(
                item.tenant, item.asset_id, item.content_sha256, ImageVariant.ORIGINAL
            )
        except (Unavailable, DeadlineExceeded) as exc:
            raise _Postponed(f"object store: {exc.message}") from exc
        except (NotFound, ImageCorrupt) as exc:
            raise _Unanalysable(exc.message) from exc
        # Decoding and the thumbnail run on the analysis threads, at their priority (analysis_nice):
        # like the detectors, they are work the acknowledgements of an ingest in progress come before.
        background = self._analyzer.executor
        try:
            rgb = await asyncio.get_running_loop().run_in_executor(background, decode_rgb, image.data)
        except DomainError as exc:  # truncated / corrupt / over the decoder's limit
            raise _Unanalysable(exc.message) from exc
        analysis = await self._analyzer.analyze(rgb)
        # The acknowledgement did not wait for the thumbnail: it is stored before the asset is visible.
        try:
            await self._images.ensure_thumbnail(item.tenant, item.content_sha256, image.data, background)
        except (Unavailable, DeadlineExceeded) as exc:
            raise _Postponed(f"object store: {exc.message}") from exc
        return analysis

    async def _record(self, item: PendingAnalysis, analysis: Analysis | None) -> bool:
        """Write the findings (or state FAILED) over the stored asset; False when it is gone, holds other
        bytes now, or is no longer pending (nothing written)."""
        async with self._flow.holding_id(item.tenant, item.asset_id):
            found = await self._reads.get(
                item.tenant, [item.asset_id], include_vectors=True, include_unanalysed=True
            )
            stored = next((s for s in found if s.asset.asset_id == item.asset_id), None)
            if (
                stored is None
                or stored.vector is None
                or stored.asset.content_sha256 != item.content_sha256
                or stored.asset.analysis_state is not AnalysisState.PENDING
            ):
                return False
            asset = stored.asset
            if analysis is None:
                asset.analysis_state = AnalysisState.FAILED
            else:
                asset.safety_labels = list(analysis.safety_labels)
                asset.safety_score = analysis.safety_score
                asset.ocr_text = analysis.ocr_text
                asset.analysis_state = AnalysisState.ANALYSED
            await self._flow.store(item.tenant, asset, stored.vector, asset.embedding_model, stored.named)
            return True
