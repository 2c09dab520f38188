"""The ingest flow: a stream of images in, one acknowledgement per item out.

Per item, concurrently up to `max_in_flight`: cheap checks (fields, byte cap) -> sha256 -> (same id,
same bytes, same metadata: UNCHANGED, no write) -> duplicate lookup by content hash
(FindByContentHash) -> image header check (format, pixel cap) -> encoding (micro-batched
EncodeImages), with inline analysis also the thumbnail (a thread) alongside it -> the original (and that
thumbnail) into the object store -> upsert
(micro-batched UpsertAssets) -> acknowledge only after the search service confirmed the write. Nothing
looks at the pixels before the duplicate lookup has said the bytes are new.

Safety + OCR (analysis_mode): "deferred" stores the item with analysis state PENDING, which the search
service keeps out of every search and read, and hands it to the analysis worker (analysis_queue.py)
after the acknowledgement, which also makes its thumbnail before the asset becomes visible; "inline"
decodes and analyses it (threads) alongside encoding, before it.
A holder still pending is not visible, so it is never named as a DUPLICATE.

The original is stored before the index write, so an indexed asset has it: when the object store
fails, the item FAILS (UNAVAILABLE, safe to re-send) and nothing is indexed. A re-sent item with the
same bytes (UNCHANGED or new metadata) stores them when they are missing (an asset indexed before
originals were kept).

A DUPLICATE names only a holder the caller may see (the visibility rules of GetAsset): a holder hidden
from the caller (licence not allowed, expired, unsafe) is treated as absent, so the item is stored as
an asset of its own. Answering DUPLICATE, even without the id, would tell the caller that content it
cannot see exists in its tenant, and would leave the caller with an upload it can never find.

Every backend call goes through `services.common.batching.MicroBatcher`: concurrent items of all
streams share EncodeImages calls; lookups, duplicate checks and upserts are batched per tenant (one
call in flight each, so the next batch grows while it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from services.common.batching import BatchStats, MicroBatcher, submit_stream
from services.common.errors import (
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    status_number,
)
from services.gateway.analysis import Analysis, check_image, decode_rgb
from services.gateway.auth import Principal
from services.gateway.backends.base import Analyzer, EncoderClient, SearchClient
from services.gateway.backends.errors import BackendError, caller_safe, public_message
from services.gateway.domain import (
    AnalysisState,
    Asset,
    Encoded,
    IngestAck,
    IngestItem,
    IngestOutcome,
    ModelRef,
    ModelVectors,
    PendingAnalysis,
    StoredAsset,
    UpsertOutcome,
    UpsertRecord,
    Vector,
)
from services.gateway.drift import DriftMonitor
from services.gateway.images import AssetImages
from services.gateway.limits import MAX_ASSET_ID_CHARS
from services.gateway.model_versions import ModelVersions
from services.gateway.policy import Policy, Visibility
from services.gateway.reads import Reads
from services.gateway.settings import GatewaySettings
from services.gateway.tenants import PerTenant

log = structlog.get_logger("ingest")

# An EncodeImages request must fit one gRPC message: the images plus room for the envelope.
_MESSAGE_HEADROOM_BYTES = 1024 * 1024


@dataclass(frozen=True)
class IngestConfig:
    max_bytes: int
    max_pixels: int
    max_in_flight: int
    encode_batch: int
    encode_concurrency: int
    encode_batch_bytes: int
    upsert_batch: int  # also the most lookups / hash checks per call
    batch_wait_s: float
    max_tenants: int
    # Safety + OCR after the acknowledgement (the item stored "pending", invisible until analysed).
    deferred_analysis: bool = False

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> IngestConfig:
        return cls(
            max_bytes=s.ingest_max_bytes,
            max_pixels=s.ingest_max_pixels,
            max_in_flight=s.ingest_max_in_flight,
            encode_batch=s.ingest_encode_batch,
            encode_concurrency=s.ingest_encode_concurrency,
            encode_batch_bytes=max(1, s.max_message_bytes - _MESSAGE_HEADROOM_BYTES),
            upsert_batch=s.ingest_upsert_batch,
            batch_wait_s=s.ingest_batch_wait_ms / 1000.0,
            max_tenants=s.max_tenants_tracked,
            deferred_analysis=s.analysis_mode == "deferred",
        )


@dataclass(frozen=True)
class _HashProbe:
    asset_id: str
    sha: str


class ItemFailed(DomainError):
    """A backend refused one item; its google.rpc.Code number goes into the item's acknowledgement."""

    def __init__(self, number: int, message: str) -> None:
        super().__init__(message)
        self.number = number or 13


class IngestFlow:
    def __init__(
        self,
        encoder: EncoderClient,
        search: SearchClient,
        reads: Reads,
        analyzer: Analyzer,
        images: AssetImages,
        policy: Policy,
        config: IngestConfig,
        on_model: Callable[[ModelRef | None], None],
        admit: Callable[[Principal], Awaitable[None]] | None = None,
        drift: DriftMonitor | None = None,
        models: ModelVersions | None = None,
    ) -> None:
        self.cfg = config
        self._models = models  # other model versions the tenant holds are written too (re-index)
        self._drift = drift
        self._images = images
        self._admit = admit  # rate limits: raises (that item fails) when the caller is over its limit
        self._encoder = encoder
        self._search = search
        self._reads = reads
        self._analyzer = analyzer
        self._policy = policy
        self._on_model = on_model  # the search flow's query-vector caches follow the encoder's model
        self._encodes: MicroBatcher[bytes, tuple[Encoded, ModelRef | None]] = MicroBatcher(
            self._encode_images,
            max_items=config.encode_batch,
            wait_s=config.batch_wait_s,
            max_concurrent=config.encode_concurrency,
            max_size=config.encode_batch_bytes,
            size_of=len,
            name="encode images",
        )
        self._lookups = PerTenant(
            lambda tenant: self._tenant_batcher(self._lookup, tenant, "get assets"), config.max_tenants
        )
        self._hash_checks = PerTenant(
            lambda tenant: self._tenant_batcher(self._holders, tenant, "find by content hash"),
            config.max_tenants,
        )
        self._upserts = PerTenant(
            lambda tenant: self._tenant_batcher(self._upsert, tenant, "upsert assets"), config.max_tenants
        )
        # Bounded by the items in flight: an entry is removed as soon as its item is done.
        self._id_locks: dict[tuple[str, str], asyncio.Lock] = {}
        # The asset now holding the bytes (stored by the claiming item, or found by it), or None.
        self._sha_claims: dict[tuple[str, str], asyncio.Future[Asset | None]] = {}
        self.stage_seconds: dict[str, float] = {}  # wall time items spent per stage, summed
        # Deferred analysis: told of each item stored pending, after its write (analysis_queue.py).
        self.on_pending: Callable[[PendingAnalysis], None] | None = None

    @property
    def defers_analysis(self) -> bool:
        return self.cfg.deferred_analysis and self._analyzer.enabled

    # ------------------------------------------------------------------------------------------
    # The stream

    async def ingest(
        self, principal: Principal, items: AsyncIterator[IngestItem]
    ) -> AsyncIterator[IngestAck]:
        """One acknowledgement per item, as each completes (match on asset_id). At most max_in_flight
        items are in progress: the client's stream waits (flow control) instead of being buffered."""
        self._policy.authorize(principal, "ingest")
        report = _StreamReport(principal.tenant, self._encodes.stats, self.stage_seconds)
        try:
            async for ack in submit_stream(
                functools.partial(self.ingest_one, principal),
                items,
                max_in_flight=self.cfg.max_in_flight,
                ordered=False,
            ):
                report.count(ack)
                yield ack
        finally:
            upserts = self._upserts.peek(principal.tenant)
            report.log(upserts.stats if upserts is not None else None)

    async def ingest_one(self, principal: Principal, item: IngestItem) -> IngestAck:
        try:
            if self._admit is not None:
                await self._admit(principal)
            return await self._ingest_one(principal, item)
        except ItemFailed as exc:
            return IngestAck(item.asset_id, IngestOutcome.FAILED, exc.number, exc.message)
        except WriteUnconfirmed as exc:
            return IngestAck(item.asset_id, IngestOutcome.UNCERTAIN, exc.number, exc.message)
        except DomainError as exc:
            if isinstance(exc, BackendError):
                log.warning("ingest item failed in a backend", asset_id=item.asset_id, detail=exc.message)
            return IngestAck(
                item.asset_id, IngestOutcome.FAILED, status_number(exc.code), public_message(exc)
            )
        except Exception:
            log.exception("ingest item failed", asset_id=item.asset_id)
            return IngestAck(
                item.asset_id, IngestOutcome.FAILED, 13, "internal error while ingesting this item"
            )

    # ------------------------------------------------------------------------------------------
    # One item

    async def _ingest_one(self, principal: Principal, item: IngestItem) -> IngestAck:
        if item.invalid:
            raise InvalidArgument(item.invalid)
        if not 1 <= len(item.asset_id) <= MAX_ASSET_ID_CHARS:
            raise InvalidArgument(f"asset_id must be 1-{MAX_ASSET_ID_CHARS} characters")
        if not item.license_name.strip():
            raise InvalidArgument("license.name is required (policy restricts results by licence)")
        # A NaN or infinite popularity would make every boosted score NaN (ranked first for every
        # query); the contract says non-negative.
        if not math.isfinite(item.popularity) or item.popularity < 0:
            raise InvalidArgument(f"popularity must be a finite number >= 0, got {item.popularity}")
        if not item.image:
            raise InvalidArgument(
                "image is empty: send the encoded file bytes (JPEG, PNG, WebP, GIF, BMP, TIFF)"
            )
        if len(item.image) > self.cfg.max_bytes:
            raise InvalidArgument(
                f"image is {len(item.image)} bytes, above the {self.cfg.max_bytes}-byte cap"
            )
        sha = hashlib.sha256(item.image).hexdigest()
        async with self.holding_id(principal.tenant, item.asset_id):
            return await self._ingest_locked(principal, item, sha)

    @contextlib.asynccontextmanager
    async def holding_id(self, tenant: str, asset_id: str) -> AsyncIterator[None]:
        """While inside, nothing else of this gateway writes the asset (the same id twice in flight:
        the second sees the first's write; the analysis worker records over what it read)."""
        key = (tenant, asset_id)
        lock = self._id_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._id_locks.get(key) is lock:
                del self._id_locks[key]

    async def _ingest_locked(self, principal: Principal, item: IngestItem, sha: str) -> IngestAck:
        tenant = principal.tenant
        with self._stage("lookup"):
            existing: StoredAsset | None = await self._lookups(tenant).submit(item.asset_id)
        now = dt.datetime.now(dt.UTC)
        if existing is not None and existing.asset.content_sha256 == sha:
            return await self._same_bytes(tenant, item, existing, now)
        return await self._new_bytes(principal, item, sha, existing, now)

    async def _same_bytes(
        self, tenant: str, item: IngestItem, existing: StoredAsset, now: dt.datetime
    ) -> IngestAck:
        """Same id, same bytes: UNCHANGED, or new metadata over the stored vector and analysis."""
        old = existing.asset
        await self._keep_missing_images(tenant, old.content_sha256, item.image)
        # Re-sending the bytes of an asset whose analysis failed queues it again.
        retry = old.analysis_state is AnalysisState.FAILED and self._analyzer.enabled
        if _same_metadata(old, item) and not retry:
            return _ack(IngestOutcome.UNCHANGED, old)
        if existing.vector is None:
            raise FailedPrecondition(f"stored asset {item.asset_id!r} has no embedding; re-send it")
        asset = _asset(
            tenant, item, old.content_sha256, old.width, old.height, created=old.created_at or now, now=now
        )
        asset.safety_labels, asset.safety_score, asset.ocr_text, asset.analysis_state = (
            old.safety_labels,
            old.safety_score,
            old.ocr_text,
            AnalysisState.PENDING if retry else old.analysis_state,
        )
        await self._store(tenant, asset, existing.vector, old.embedding_model, existing.named)
        self._queue_if_pending(asset)
        return _ack(IngestOutcome.UPDATED, asset)

    async def _new_bytes(
        self, principal: Principal, item: IngestItem, sha: str, existing: StoredAsset | None, now: dt.datetime
    ) -> IngestAck:
        tenant = principal.tenant
        vis = self._policy.visibility(principal, "ingest", now=now)
        # A concurrent item with the same bytes decides first. When what it stored (or found) is hidden
        # from this caller, the next claim in line may hold a copy this caller sees: wait for it too.
        key = (tenant, sha)
        while (claim := self._sha_claims.get(key)) is not None:
            first = await asyncio.shield(claim)
            if first is not None and first.asset_id != item.asset_id and self._may_see(principal, vis, first):
                return _duplicate(item, sha, first.asset_id)
        fut: asyncio.Future[Asset | None] = asyncio.get_running_loop().create_future()
        self._sha_claims[key] = fut
        stored_as: Asset | None = None
        try:
            with self._stage("dedupe"):
                holders = await self._hash_checks(tenant).submit(_HashProbe(item.asset_id, sha))
            holder = next((h for h in holders if self._may_see(principal, vis, h)), None)
            if holder is not None:
                stored_as = holder
                return _duplicate(item, sha, holder.asset_id)
            # The image work comes only now: bytes a stored asset already holds were valid when it
            # was stored (same bytes, same header, same pixels), so a DUPLICATE needs none of it.
            with self._stage("inspect"):
                inspected = check_image(item.image, self.cfg.max_bytes, self.cfg.max_pixels)
            deferred = self.defers_analysis
            with self._stage("encode" if deferred else "analyse+encode"):
                # Deferred: the analysis worker makes the thumbnail too, before the asset is visible.
                analysis, thumbnail, (encoded, model) = await asyncio.gather(
                    _nothing() if deferred else self._analyse(item.image),
                    _no_thumbnail() if deferred else self._images.thumbnail(item.image),
                    self._encodes.submit(item.image),
                )
            if encoded.vector is None:
                raise ItemFailed(
                    encoded.error_code, f"encoder rejected the image: {caller_safe(encoded.error_message)}"
                )
            if self._drift is not None:
                self._drift.observe_image(tenant, model, encoded.vector)
            others = await self._models.other_vectors(tenant, item.image, model) if self._models else {}
            with self._stage("keep images"):
                await self._images.keep(tenant, sha, item.image, thumbnail)
            created = existing.asset.created_at if existing is not None and existing.asset.created_at else now
            asset = _asset(tenant, item, sha, inspected.width, inspected.height, created=created, now=now)
            asset.safety_labels, asset.safety_score, asset.ocr_text = (
                analysis.safety_labels,
                analysis.safety_score,
                analysis.ocr_text,
            )
            asset.embedding_model = model
            asset.analysis_state = AnalysisState.PENDING if deferred else AnalysisState.ANALYSED
            with self._stage("store"):
                await self._store(tenant, asset, encoded.vector, model, encoded.named, others)
            self._queue_if_pending(asset)
            stored_as = asset
            return _ack(IngestOutcome.UPDATED if existing is not None else IngestOutcome.CREATED, asset)
        finally:
            if not fut.done():
                fut.set_result(stored_as)
            if self._sha_claims.get(key) is fut:
                del self._sha_claims[key]

    async def _keep_missing_images(self, tenant: str, sha: str, image: bytes) -> None:
        """Store the images of indexed bytes when the object store lacks them."""
        if await self._images.kept(tenant, sha):
            return
        check_image(image, self.cfg.max_bytes, self.cfg.max_pixels)
        await self._images.keep(tenant, sha, image, await self._images.thumbnail(image))

    @contextlib.asynccontextmanager
    async def holding_content(self, tenant: str, sha: str) -> AsyncIterator[None]:
        """While inside, no item of this tenant with these bytes is between its duplicate check and its
        index write (the delete flow decides whether the content's images may go)."""
        key = (tenant, sha)
        while (claim := self._sha_claims.get(key)) is not None:
            await asyncio.shield(claim)
        fut: asyncio.Future[Asset | None] = asyncio.get_running_loop().create_future()
        self._sha_claims[key] = fut
        try:
            yield
        finally:
            fut.set_result(None)
            if self._sha_claims.get(key) is fut:
                del self._sha_claims[key]

    def _may_see(self, principal: Principal, vis: Visibility, holder: Asset) -> bool:
        """Whether a DUPLICATE may name `holder`: the caller could read it with GetAsset."""
        why = self._policy.denial(vis, holder)
        if why is None:
            return True
        self._policy.audit.record(
            principal, "ingest", "deny", why, asset_id=holder.asset_id, stage="duplicate holder"
        )
        return False

    async def _analyse(self, image: bytes) -> Analysis:
        if not self._analyzer.enabled:
            return Analysis()
        rgb = await asyncio.to_thread(decode_rgb, image)
        return await self._analyzer.analyze(rgb)

    def _queue_if_pending(self, asset: Asset) -> None:
        if asset.analysis_state is AnalysisState.PENDING and self.on_pending is not None:
            self.on_pending(PendingAnalysis(asset.tenant, asset.asset_id, asset.content_sha256))

    async def store(
        self, tenant: str, asset: Asset, vector: Vector, model: ModelRef | None, named: dict[str, Vector]
    ) -> None:
        """One asset written through the tenant's upsert batches (the analysis worker's writes)."""
        await self._store(tenant, asset, vector, model, named)

    async def _store(
        self,
        tenant: str,
        asset: Asset,
        vector: Vector,
        model: ModelRef | None,
        named: dict[str, Vector],
        others: dict[ModelRef, ModelVectors] | None = None,
    ) -> None:
        """Store the asset with every vector the model gave it (the primary and e.g. "visual"), and
        the other model versions' vectors of the image (`others`)."""
        record = UpsertRecord(asset, vector, model, named, others or {})
        try:
            outcome: UpsertOutcome = await self._upserts(tenant).submit(record)
        except DomainError as exc:
            if write_outcome_unknown(exc):
                raise WriteUnconfirmed(
                    status_number(exc.code),
                    f"the index did not confirm the write ({public_message(exc)}); re-sending is safe",
                ) from exc
            raise
        if outcome.error_code:
            raise ItemFailed(
                outcome.error_code, f"search service did not store it: {caller_safe(outcome.error_message)}"
            )

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Accumulate wall time per ingest stage (reported in the "ingest stream done" log line)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - start

    # ------------------------------------------------------------------------------------------
    # Batch calls (one per micro-batch)

    def _tenant_batcher(
        self, fn: Callable[[str, list[Any]], Any], tenant: str, name: str
    ) -> MicroBatcher[Any, Any]:
        """Single-item calls of one tenant batched into one search call, one call in flight (index
        commits have a fixed cost per call, so bigger batches are cheaper per item)."""
        return MicroBatcher(
            functools.partial(fn, tenant),
            max_items=self.cfg.upsert_batch,
            wait_s=self.cfg.batch_wait_s,
            name=f"{name} ({tenant})",
        )

    async def _encode_images(self, images: list[bytes]) -> list[tuple[Encoded, ModelRef | None]]:
        batch = await self._encoder.encode_images(images)
        self._on_model(batch.model)
        return [(item, batch.model) for item in batch.items]

    async def _lookup(self, tenant: str, asset_ids: list[str]) -> list[StoredAsset | None]:
        """Stored assets (with vectors) by id, in order; None where absent. One GetAssets call."""
        found = await self._reads.get(
            tenant, list(dict.fromkeys(asset_ids)), include_vectors=True, include_unanalysed=True
        )
        by_id = {s.asset.asset_id: s for s in found}
        return [by_id.get(a) for a in asset_ids]

    async def _holders(self, tenant: str, probes: list[_HashProbe]) -> list[list[Asset]]:
        """For each probe, the other stored assets with the same bytes, by id. One FindByContentHash
        call, and one GetAssets call when any are found (each item decides which it may name: the
        items of a batch can come from callers with different visibility)."""
        try:
            holders = await self._search.find_by_content_hash(
                tenant, list(dict.fromkeys(p.sha for p in probes))
            )
        except NotFound:  # nothing stored in the tenant yet
            holders = {}
        others = [sorted(a for a in holders.get(p.sha, []) if a != p.asset_id) for p in probes]
        wanted = list(dict.fromkeys(a for ids in others for a in ids))
        by_id: dict[str, Asset] = {}
        step = self.cfg.upsert_batch  # the search service caps the ids of one GetAssets call
        for i in range(0, len(wanted), step):
            found = await self._reads.get(tenant, wanted[i : i + step], include_vectors=False)
            by_id.update((s.asset.asset_id, s.asset) for s in found)
        # An id gone by now (deleted meanwhile) holds nothing any more.
        return [[by_id[a] for a in ids if a in by_id] for ids in others]

    async def _upsert(self, tenant: str, records: list[UpsertRecord]) -> Sequence[UpsertOutcome]:
        return await self._search.upsert(tenant, records)


# Statuses of a failed upsert call after which the write may have been stored: the request may have
# reached the search service (and Weaviate) before the answer was lost.
_UNCONFIRMED_STATUSES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)


def write_outcome_unknown(exc: DomainError) -> bool:
    """Whether an upsert that raised `exc` may still have stored its items.

    Conservative (UNCERTAIN allows both, FAILED does not): UNAVAILABLE covers a breaker that failed fast
    (nothing sent on that attempt, but an earlier, retried attempt may have been), and a deadline that
    ran out before a retry, or while the item waited in the upsert batcher, counts as unknown too."""
    return isinstance(exc, Unavailable | DeadlineExceeded) or exc.code in _UNCONFIRMED_STATUSES


class WriteUnconfirmed(Exception):
    """The search service did not confirm an upsert: the item may or may not be stored (UNCERTAIN)."""

    def __init__(self, number: int, message: str) -> None:
        super().__init__(message)
        self.number, self.message = number, message


class _StreamReport:
    """The "ingest stream done" log line: outcomes, time, batch sizes and stage times of one stream."""

    def __init__(
        self,
        tenant: str,
        encodes: BatchStats,
        stage_seconds: dict[str, float],
    ) -> None:
        self._tenant = tenant
        self._started = time.perf_counter()
        self._outcomes: dict[str, int] = {}
        self._encodes = encodes
        self._encodes_before = BatchStats(encodes.batches, encodes.items)
        self._stage_seconds = stage_seconds
        self._stages_before = dict(stage_seconds)

    def count(self, ack: IngestAck) -> None:
        self._outcomes[ack.outcome.name] = self._outcomes.get(ack.outcome.name, 0) + 1

    def log(self, upserts: BatchStats | None) -> None:
        """`upserts`: the tenant's upsert batches over their lifetime (None: it has none)."""
        calls = self._encodes.batches - self._encodes_before.batches
        encoded = self._encodes.items - self._encodes_before.items
        items_done = max(1, sum(self._outcomes.values()))
        stage_ms = {
            k: round((v - self._stages_before.get(k, 0.0)) * 1000 / items_done, 1)
            for k, v in self._stage_seconds.items()
        }
        log.info(
            "ingest stream done",
            mean_stage_ms=stage_ms,
            tenant=self._tenant,
            outcomes=self._outcomes,
            seconds=round(time.perf_counter() - self._started, 3),
            encode_calls=calls,
            mean_encode_batch=round(encoded / calls, 1) if calls else 0,
            mean_upsert_batch=round(upserts.mean_batch, 1) if upserts is not None else 0,
        )


def _same_metadata(a: Asset, item: IngestItem) -> bool:
    return (
        a.uri == item.uri
        and a.caption == item.caption
        and list(a.tags) == list(item.tags)
        and a.owner == item.owner
        and a.license_name == item.license_name
        and a.license_expires_at == item.license_expires_at
        and a.source == item.source
        and float(a.popularity) == float(item.popularity)
    )


def _asset(
    tenant: str,
    item: IngestItem,
    sha: str,
    width: int,
    height: int,
    *,
    created: dt.datetime,
    now: dt.datetime,
) -> Asset:
    return Asset(
        asset_id=item.asset_id,
        tenant=tenant,
        uri=item.uri,
        caption=item.caption,
        tags=list(item.tags),
        owner=item.owner,
        license_name=item.license_name,
        license_expires_at=item.license_expires_at,
        source=item.source,
        created_at=created,
        updated_at=now,
        width=width,
        height=height,
        content_sha256=sha,
        popularity=item.popularity,
    )


def _ack(outcome: IngestOutcome, asset: Asset) -> IngestAck:
    return IngestAck(
        asset.asset_id,
        outcome,
        content_sha256=asset.content_sha256,
        safety_labels=list(asset.safety_labels),
        ocr_text=asset.ocr_text,
        analysis_state=asset.analysis_state,
    )


async def _nothing() -> Analysis:
    return Analysis()


async def _no_thumbnail() -> bytes | None:
    return None


def _duplicate(item: IngestItem, sha: str, holder: str) -> IngestAck:
    return IngestAck(item.asset_id, IngestOutcome.DUPLICATE, content_sha256=sha, duplicate_of=holder)
