"""Re-index a tenant to another model version from the stored originals, in the background.

One job per tenant. The job registers the target with the search service (AddModelVersion: from then
on ingest writes both versions), then scans the tenant's assets in the search service's stable order
(ScanAssets) page by page. An asset that already holds the target's vectors is skipped (ingest wrote
them, or this job did before a crash); the others' originals are read from the object store,
re-embedded by the target's encoder (`reindex_batch` images per call, `reindex_concurrency` calls in
flight, at most `reindex_rate_per_s` images per second: aiolimiter's leaky bucket), and written as
vectors only (UpsertAssets vectors_only, with the content hash they were computed from: an asset whose
image changed meanwhile is not touched). After each page the checkpoint (the cursor and the counts) is
written to `<data_dir>/reindex/<tenant>.json` (temporary file, fsync, rename, directory fsync), so a
crash resumes after the last finished page and re-embeds at most that page's unfinished assets; a
gateway resumes its running jobs when it starts. An asset whose original is missing is counted and
named (first 100) in the job, never fatal. When the scan ends, one more pass (after the gateways'
model-state TTL) picks up assets an ingest wrote before it knew of the job.

Single gateway per tenant's job: the checkpoint is a local file (a second gateway replica does not see
the job; docs/LIFECYCLE.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import structlog
from aiolimiter import AsyncLimiter
from prometheus_client import Counter, Gauge

from services.common.errors import AlreadyExists, DomainError, FailedPrecondition, NotFound
from services.common.files import write_json_durably
from services.gateway.backends.base import ModelVersionsClient
from services.gateway.backends.blobs import BlobKey, BlobStore
from services.gateway.domain import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    ImageVariant,
    ModelRef,
    ModelVectors,
    ReindexJob,
    ScannedAsset,
)
from services.gateway.drift import DriftMonitor
from services.gateway.model_refs import check_model
from services.gateway.model_versions import ModelVersions

log = structlog.get_logger("gateway.reindex")

REINDEX_ASSETS = Counter(
    "gateway_reindex_assets_total",
    "Assets handled by re-index jobs, by outcome (reindexed, already_done, missing_original, failed).",
    ["outcome"],
)
REINDEX_PROGRESS = Gauge(
    "gateway_reindex_progress_ratio",
    "Scanned share of the tenant's assets of its running re-index job.",
    ["tenant"],
)
REINDEX_RUNNING = Gauge("gateway_reindex_jobs_running", "Re-index jobs running in this gateway.")

MAX_MISSING_IDS = 100
# Failures a retry may fix (a backend restarting); the page is redone after a backoff.
_TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
)
_MAX_TRANSIENT = 8


@dataclass(frozen=True)
class ReindexConfig:
    state_dir: Path
    rate_per_s: float
    batch: int
    concurrency: int
    page_size: int
    sweep_delay_s: float


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class Reindexer:
    def __init__(
        self,
        search: ModelVersionsClient,
        blobs: BlobStore,
        models: ModelVersions,
        config: ReindexConfig,
        on_change: Callable[[str], None] = lambda tenant: None,
        drift: DriftMonitor | None = None,
    ) -> None:
        self._search = search
        # The target's image vectors feed its drift statistics, so the reference taken when it is
        # activated describes the re-indexed collection (docs/OPERATIONS.md, drift).
        self._drift = drift
        self._blobs = blobs
        self._models = models
        self.cfg = config
        self._on_change = on_change
        self._jobs: dict[str, ReindexJob] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()

    def _path(self, tenant: str) -> Path:
        return self.cfg.state_dir / f"{tenant}.json"

    async def _save(self, job: ReindexJob) -> None:
        job.updated_at = _now()
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(write_json_durably, self._path(job.tenant), job.to_json())

    def _load(self, tenant: str) -> ReindexJob | None:
        path = self._path(tenant)
        if not path.exists():
            return None
        return ReindexJob.from_json(json.loads(path.read_text()))

    def get(self, tenant: str) -> ReindexJob:
        job = self._jobs.get(tenant) or self._load(tenant)
        if job is None:
            raise NotFound(f"tenant '{tenant}' has no re-index job")
        return replace(job, missing_asset_ids=list(job.missing_asset_ids))

    def running(self, tenant: str) -> ReindexJob | None:
        task = self._tasks.get(tenant)
        return self._jobs[tenant] if task is not None and not task.done() else None

    async def start(self, tenant: str, target: ModelRef) -> ReindexJob:
        """Start (or resume) the tenant's job to `target`; the job already running to `target` is
        returned as it is; one running to another target is ALREADY_EXISTS."""
        check_model(target, "target")
        if self._models.encoder_of(target) is None:
            raise NotFound(
                f"no encoder is configured for model version {target.name}:{target.version} "
                "(IMAGESEARCH_GATEWAY_MODEL_ENCODERS)"
            )
        async with self._lock:
            task = self._tasks.get(tenant)
            if task is not None and not task.done():
                running = self._jobs[tenant]
                if running.target != target:
                    raise AlreadyExists(
                        f"a re-index of tenant '{tenant}' to {running.target.name}:{running.target.version} "
                        "is running; wait for it to finish"
                    )
                return self.get(tenant)
            previous = self._load(tenant)
            if previous is not None and previous.target == target and previous.state != SUCCEEDED:
                job = replace(previous, state=RUNNING, error="")  # resume from its checkpoint
            else:
                state = await self._search.model_versions(tenant)  # NOT_FOUND: no assets yet
                job = ReindexJob(tenant, target, total_assets=state.asset_count, started_at=_now())
            await self._search.add_model_version(tenant, target)
            self._models.forget(tenant)
            self._on_change(tenant)
            await self._save(job)
            self._launch(job)
            return self.get(tenant)

    def _launch(self, job: ReindexJob) -> None:
        self._jobs[job.tenant] = job
        # A fresh context: the job must not inherit the starting call's deadline and request id
        # (services.common.context), or every backend call fails once that call's deadline passed.
        self._tasks[job.tenant] = asyncio.create_task(
            self._run(job), name=f"reindex {job.tenant}", context=contextvars.Context()
        )

    async def resume_all(self) -> None:
        """Resume every job a previous run of this gateway left running (crash or restart)."""
        if not self.cfg.state_dir.is_dir():
            return
        for path in sorted(self.cfg.state_dir.glob("*.json")):
            try:
                job = ReindexJob.from_json(json.loads(path.read_text()))
            except (ValueError, KeyError, TypeError) as exc:
                log.error("unreadable re-index checkpoint", path=str(path), error=str(exc))
                continue
            if job.state == RUNNING and job.tenant not in self._tasks:
                log.info("resuming re-index", tenant=job.tenant, scanned=job.scanned, cursor=job.cursor)
                self._launch(job)

    async def close(self) -> None:
        """Stop the jobs (their checkpoints stay: the next start resumes them)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def wait(self, tenant: str) -> ReindexJob:
        """Until the tenant's running job ends (tests, the CLI's in-process use)."""
        task = self._tasks.get(tenant)
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        return self.get(tenant)

    # ---- the job ---------------------------------------------------------------------------------

    async def _run(self, job: ReindexJob) -> None:
        REINDEX_RUNNING.inc()
        encoder = self._models.encoder_of(job.target)
        limiter = AsyncLimiter(self.cfg.rate_per_s, 1.0) if self.cfg.rate_per_s > 0 else None
        transient = 0
        try:
            assert encoder is not None
            while True:
                try:
                    page, next_cursor = await self._search.scan(job.tenant, job.cursor, self.cfg.page_size)
                    done_before = job.reindexed
                    await self._page(job, page, encoder, limiter)
                except DomainError as exc:
                    if exc.code not in _TRANSIENT or transient >= _MAX_TRANSIENT:
                        raise
                    transient += 1  # the page is redone from the checkpoint (finished assets are skipped)
                    log.warning(
                        "re-index: backend unavailable; retrying", tenant=job.tenant, detail=exc.message
                    )
                    await asyncio.sleep(min(30.0, 0.5 * 2**transient))
                    continue
                transient = 0
                job.scanned += len(page)
                job.cursor = next_cursor
                if job.total_assets:
                    REINDEX_PROGRESS.labels(job.tenant).set(min(1.0, job.scanned / job.total_assets))
                if not next_cursor:
                    if job.scan_pass == 1:
                        # The sweep: assets an ingest wrote before its gateway knew of the job.
                        job.scan_pass = 2
                        await self._save(job)
                        await asyncio.sleep(self.cfg.sweep_delay_s)
                        continue
                    job.state = SUCCEEDED
                    await self._save(job)
                    log.info("re-index done", tenant=job.tenant, reindexed=job.reindexed, scanned=job.scanned)
                    return
                await self._save(job)
                if job.reindexed != done_before:
                    self._on_change(job.tenant)
        except asyncio.CancelledError:
            raise
        except DomainError as exc:
            job.state, job.error = FAILED, exc.message
            log.error("re-index failed", tenant=job.tenant, error=exc.message)
            with contextlib.suppress(Exception):
                await self._save(job)
        except Exception as exc:
            job.state, job.error = FAILED, "internal error (see the gateway log)"
            log.exception("re-index failed", tenant=job.tenant, error=repr(exc))
            with contextlib.suppress(Exception):
                await self._save(job)
        finally:
            REINDEX_RUNNING.dec()
            if job.state != RUNNING:
                with contextlib.suppress(KeyError):
                    REINDEX_PROGRESS.remove(job.tenant)

    async def _page(
        self, job: ReindexJob, page: list[ScannedAsset], encoder: Any, limiter: AsyncLimiter | None
    ) -> None:
        todo = []
        for a in page:
            if job.target in a.models:
                if job.scan_pass == 1:
                    job.already_done += 1
                    REINDEX_ASSETS.labels("already_done").inc()
            else:
                todo.append(a)
        batches = [todo[i : i + self.cfg.batch] for i in range(0, len(todo), self.cfg.batch)]
        gate = asyncio.Semaphore(self.cfg.concurrency)

        async def one(batch: list[ScannedAsset]) -> None:
            async with gate:
                await self._batch(job, batch, encoder, limiter)

        await asyncio.gather(*(one(b) for b in batches))

    async def _batch(
        self, job: ReindexJob, batch: list[ScannedAsset], encoder: Any, limiter: AsyncLimiter | None
    ) -> None:
        originals = await asyncio.gather(*(self._original(job.tenant, a) for a in batch))
        present = [(a, data) for a, data in zip(batch, originals, strict=True) if data is not None]
        for a, data in zip(batch, originals, strict=True):
            if data is None and job.scan_pass == 1:  # the sweep meets the same ones again
                job.missing_originals += 1
                REINDEX_ASSETS.labels("missing_original").inc()
                if len(job.missing_asset_ids) < MAX_MISSING_IDS and a.asset_id not in job.missing_asset_ids:
                    job.missing_asset_ids.append(a.asset_id)
        if not present:
            return
        if limiter is not None:
            for _ in present:
                await limiter.acquire()
        encoded = await encoder.encode_images([data for _, data in present])
        if encoded.model != job.target:
            served = f"{encoded.model.name}:{encoded.model.version}" if encoded.model else "no model"
            raise FailedPrecondition(
                f"the encoder configured for {job.target.name}:{job.target.version} serves {served}; "
                "fix IMAGESEARCH_GATEWAY_MODEL_ENCODERS"
            )
        items = []
        for (a, _), item in zip(present, encoded.items, strict=True):
            if item.vector is None:
                job.failed += 1
                REINDEX_ASSETS.labels("failed").inc()
                log.warning("re-index: encoder rejected an original", tenant=job.tenant, asset_id=a.asset_id)
                continue
            items.append(
                (a.asset_id, a.content_sha256, job.target, ModelVectors(item.vector, dict(item.named)))
            )
        if not items:
            return
        outcomes = await self._search.upsert_vectors(job.tenant, items)
        for (_, _, _, vectors), outcome in zip(items, outcomes, strict=True):
            if outcome.error_code:
                # NOT_FOUND (deleted meanwhile) or ABORTED (its image changed: ingest wrote both versions)
                job.failed += 1
                REINDEX_ASSETS.labels("failed").inc()
                log.info(
                    "re-index: asset not written", asset_id=outcome.asset_id, reason=outcome.error_message
                )
            else:
                job.reindexed += 1
                REINDEX_ASSETS.labels("reindexed").inc()
                if self._drift is not None:
                    self._drift.observe_image(job.tenant, job.target, vectors.vector)

    async def _original(self, tenant: str, asset: ScannedAsset) -> bytes | None:
        if not asset.content_sha256:
            return None
        blob = await self._blobs.get(BlobKey(tenant, asset.content_sha256, ImageVariant.ORIGINAL))
        return None if blob is None else blob.data
