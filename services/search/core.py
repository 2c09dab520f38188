"""The search service's domain logic: validation, query planning, model checks, cache use.

No gRPC or protobuf here: the servicer maps messages to these calls. The backend (Weaviate or embedded)
and the cache (Redis, memory, none) are chosen by settings and injected.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import structlog

from services.common.batching import MicroBatcher, submit_stream
from services.common.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    status_number,
)
from services.common.limits import MAX_ASSET_ID_CHARS
from services.search.backends.base import SearchBackend
from services.search.cache import ResultCache
from services.search.codec import hits_from_bytes, hits_to_bytes
from services.search.domain import (
    ANALYSIS_HIDDEN,
    ANALYSIS_PENDING,
    PRIMARY_VECTOR,
    SHA256_HEX_RE,
    SLOT_SEPARATOR,
    TENANT_RE,
    AssetDoc,
    AssetRecord,
    CollectionInfo,
    ContentHashMatch,
    Hit,
    ItemFailure,
    ModelRef,
    ModelVersionsView,
    PendingAsset,
    QueryPlan,
    QueryResult,
    Stats,
    StreamedUpsert,
    TenantModels,
    UpsertOutcome,
    WriteSummary,
    analysis_done,
    storage_name,
    validate_vector,
)
from services.search.filters import analysed_only
from services.search.metrics import (
    BACKEND_LATENCY,
    CACHE_COALESCED,
    CACHE_REQUESTS,
    ITEMS_WRITTEN,
    QUERY_LATENCY,
)
from services.search.planning import plan_digest, plan_query
from services.search.settings import SearchSettings
from services.search.versions import (
    SCAN_PAGE,
    ModelVersions,
    compose,
    decompose,
    held_models,
    model_sets,
)

log = structlog.get_logger("search.core")

_INVALID = status_number(InvalidArgument.code)
_PRECONDITION = status_number(FailedPrecondition.code)


def validate_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant or ""):
        raise InvalidArgument(
            f"tenant {tenant!r} is invalid: 1-64 characters from letters, digits, '-' and '_'"
        )
    return tenant


class SearchCore:
    def __init__(self, settings: SearchSettings, backend: SearchBackend, cache: ResultCache) -> None:
        self.settings = settings
        self.backend = backend
        self.cache = cache
        self._inflight: dict[tuple[str, int, str], asyncio.Future[list[Hit]]] = {}
        self._model_lock = asyncio.Lock()
        # Streamed upserts of every open stream: whatever arrived while the previous write ran (up to
        # max_batch items) becomes the next write.
        self._stream_writer: MicroBatcher[StreamedUpsert, UpsertOutcome] = MicroBatcher(
            self._write_streamed, max_items=settings.max_batch, wait_s=0, name="stream upsert"
        )
        # Long-running maintenance (the vector index repair watcher); cancelled by close().
        self._background: list[asyncio.Task[None]] = []
        self.versions = ModelVersions(backend, settings.model_state_ttl_s, settings.max_tenants_tracked)

    def run_in_background(self, job: Coroutine[Any, Any, None]) -> None:
        self._background.append(asyncio.create_task(job))

    async def close(self) -> None:
        """Stop background jobs and the stream batcher (queued items are cancelled, the write in flight
        finishes)."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._stream_writer.close()

    # ---- writes ----------------------------------------------------------------------------------

    def _check_batch(self, n: int, what: str) -> None:
        if n == 0:
            raise InvalidArgument(f"{what}: the batch is empty")
        if n > self.settings.max_batch:
            raise InvalidArgument(f"{what}: {n} items exceed the batch limit of {self.settings.max_batch}")

    async def _collection_model(self, first: AssetRecord | None) -> tuple[ModelRef | None, int]:
        info = await self.backend.collection_info()
        if info.model is None and first is not None:
            async with self._model_lock:
                info = await self.backend.collection_info()
                if info.model is None:
                    assert first.doc.embedding_model is not None and first.vector is not None
                    info = await self.backend.set_collection_model(
                        first.doc.embedding_model, len(first.vector)
                    )
                    log.info("collection model recorded", model=str(info.model), dimension=info.dimension)
        return info.model, info.dimension

    async def _named_dimensions(self, records: list[AssetRecord]) -> dict[str, int]:
        """Each named vector's stored dimension; a name first written here is fixed at the dimension
        of its first valid item."""
        info = await self.backend.collection_info()
        new: dict[str, int] = {}
        for r in records:
            for name, vec in r.named.items():
                if name not in info.named:
                    new.setdefault(name, len(vec))
        if new:
            async with self._model_lock:
                info = await self.backend.add_named_vectors(new)
                log.info("named vectors recorded", vectors=info.named)
        return info.named

    def _item_error(self, rec: AssetRecord) -> ItemFailure | None:
        aid = rec.doc.asset_id
        if not aid or len(aid) > MAX_ASSET_ID_CHARS:
            return ItemFailure(
                _INVALID, f"asset_id must be 1-{MAX_ASSET_ID_CHARS} characters, got {len(aid)}"
            )
        bad_value = _value_problem(rec.doc)
        if bad_value is not None:
            return ItemFailure(_INVALID, bad_value)
        if rec.vector is None:
            return ItemFailure(_INVALID, "image_embedding is required")
        m = rec.doc.embedding_model
        if m is None or not m.name or not m.version:
            return ItemFailure(_INVALID, "image_embedding.model needs a name and a version")
        try:
            rec.vector = validate_vector(rec.vector, "image_embedding")
            for name, vec in rec.named.items():
                rec.named[name] = validate_vector(vec, f"vector {name!r}")
            for other, vecs in rec.others.items():
                if vecs.vector is None:
                    return ItemFailure(_INVALID, f"the vectors of {other} need its primary vector")
                vecs.vector = validate_vector(vecs.vector, f"the {other} primary vector")
                for name, vec in vecs.named.items():
                    vecs.named[name] = validate_vector(vec, f"the {other} vector {name!r}")
        except InvalidArgument as exc:
            return ItemFailure(_INVALID, exc.message)
        return None

    async def upsert(
        self,
        tenant: str,
        records: list[AssetRecord],
        wire_errors: list[ItemFailure | None] | None = None,
        vectors_only: bool = False,
    ) -> WriteSummary:
        """Validate every item, write the valid ones, bump the tenant's generation if anything was stored.

        `wire_errors` carries problems found while decoding items (they fail those items only).
        `vectors_only` writes only the records' vectors into existing assets (a re-index).
        """
        validate_tenant(tenant)
        self._check_batch(len(records), "upsert")
        pre = wire_errors or [None] * len(records)
        errors: list[ItemFailure | None] = [
            p or self._item_error(r) for r, p in zip(records, pre, strict=True)
        ]
        seen: dict[str, int] = {}
        for i, r in enumerate(records):
            if errors[i] is None:
                if r.doc.asset_id in seen:
                    errors[i] = ItemFailure(
                        _INVALID,
                        f"asset_id {r.doc.asset_id!r} repeats item {seen[r.doc.asset_id]} of this batch",
                    )
                else:
                    seen[r.doc.asset_id] = i
        first = next((r for r, e in zip(records, errors, strict=True) if e is None), None)
        if vectors_only and first is not None and not await self.backend.tenant_exists(tenant):
            raise NotFound(f"tenant '{tenant}' has no assets (it is created by its first upsert)")
        await self._collection_model(None if vectors_only else first)
        # Read fresh, not from this process's view: another search replica may have registered a version
        # or changed what the tenant holds, and a write merged on a stale view would drop the vectors of
        # a version it does not know of (the embedded backend's refresh costs nothing: one process).
        info = await self.backend.collection_info(refresh=True)
        state = await self.versions.state(tenant, fresh=True) if info.versions else TenantModels()
        for i, r in enumerate(records):
            if errors[i] is None:
                errors[i] = self._model_error(tenant, info, state, r)
        merge = (
            vectors_only
            or bool(state.held)
            or any(
                set(model_sets(r)) - {info.model} for r, e in zip(records, errors, strict=True) if e is None
            )
        )
        if not merge:
            return await self._store(tenant, records, errors, info)
        async with self.versions.lock(tenant):
            await self._merge(tenant, records, errors, info, vectors_only)
            return await self._store(tenant, records, errors, info)

    def _model_error(
        self, tenant: str, info: CollectionInfo, state: TenantModels, r: AssetRecord
    ) -> ItemFailure | None:
        """Each model version the record carries must be registered and held by the tenant, and
        its primary of the registered dimension."""
        for model, vecs in model_sets(r).items():
            slot = info.slot_of(model)
            if slot is None:
                return ItemFailure(
                    _PRECONDITION,
                    f"image_embedding comes from model {model}; the collection holds {info.model} "
                    "(re-embed the asset with that model, or re-index the collection to the new one)",
                )
            if slot and model not in state.held:
                return ItemFailure(
                    _PRECONDITION,
                    f"tenant '{tenant}' does not hold vectors of model version {model} "
                    "(re-index to it first)",
                )
            assert vecs.vector is not None
            dim = info.dimension if not slot else info.named.get(storage_name(slot, PRIMARY_VECTOR), 0)
            if dim and len(vecs.vector) != dim:
                what = "image_embedding" if model == r.doc.embedding_model else f"the {model} primary vector"
                return ItemFailure(
                    _INVALID, f"{what} has dimension {len(vecs.vector)}; the collection's is {dim}"
                )
            reserved = next((n for n in vecs.named if SLOT_SEPARATOR in n), None)
            if reserved is not None:
                return ItemFailure(_INVALID, f"vector name {reserved!r}: '__' is reserved")
        return None

    async def _merge(
        self,
        tenant: str,
        records: list[AssetRecord],
        errors: list[ItemFailure | None],
        info: CollectionInfo,
        vectors_only: bool,
    ) -> None:
        """Keep what a write does not replace: the stored vectors of the versions it does not carry
        (while the image is unchanged) and, for a vectors-only write, the stored metadata. Records are
        turned into storage records in place."""
        state = await self.versions.state(tenant)
        valid = [i for i, e in enumerate(errors) if e is None]
        existing: list[AssetRecord | None] = [None] * len(valid)
        if valid and await self.backend.tenant_exists(tenant):
            existing = await self.backend.get(tenant, [records[i].doc.asset_id for i in valid], True)
        for i, old in zip(valid, existing, strict=True):
            r = records[i]
            sets = model_sets(r)
            doc = r.doc
            if vectors_only:
                if old is None:
                    errors[i] = ItemFailure(
                        status_number(NotFound.code),
                        f"asset '{r.doc.asset_id}' not found in tenant '{tenant}' (a vectors-only write "
                        "needs an existing asset)",
                    )
                    continue
                if r.doc.content_sha256 and r.doc.content_sha256 != old.doc.content_sha256:
                    errors[i] = ItemFailure(
                        status_number(Aborted.code),
                        f"asset '{r.doc.asset_id}' holds another image now (its content_sha256 changed "
                        "since these vectors were computed); re-read it",
                    )
                    continue
                doc = replace(old.doc)
            if old is not None and (vectors_only or old.doc.content_sha256 == doc.content_sha256):
                sets = {**decompose(info, old), **sets}
            sets = {m: v for m, v in sets.items() if m == info.model or m in state.held}
            if info.model not in sets:
                errors[i] = ItemFailure(
                    _PRECONDITION,
                    f"asset '{r.doc.asset_id}' needs vectors of {info.model}, the collection's first "
                    "model (every asset holds them)",
                )
                continue
            records[i] = compose(info, AssetRecord(doc), sets)

    async def _store(
        self,
        tenant: str,
        records: list[AssetRecord],
        errors: list[ItemFailure | None],
        info: CollectionInfo,
    ) -> WriteSummary:
        for i, r in enumerate(records):
            if errors[i] is None and r.others:
                records[i] = compose(info, r, model_sets(r))
        named_dims = await self._named_dimensions(
            [r for r, e in zip(records, errors, strict=True) if e is None]
        )
        for i, r in enumerate(records):
            wrong = [(n, len(v)) for n, v in r.named.items() if len(v) != named_dims.get(n, len(v))]
            if errors[i] is None and wrong:
                name, got = wrong[0]
                errors[i] = ItemFailure(
                    _INVALID, f"vector {name!r} has dimension {got}; the collection's is {named_dims[name]}"
                )
        valid = [i for i, e in enumerate(errors) if e is None]
        if valid:
            await self._stamp_times(tenant, [records[i] for i in valid])
            start = time.perf_counter()
            results = await self.backend.upsert(tenant, [records[i] for i in valid])
            BACKEND_LATENCY.labels(self.backend.name, "upsert").observe(time.perf_counter() - start)
            for i, err in zip(valid, results, strict=True):
                errors[i] = err
        stored = sum(e is None for e in errors)
        ITEMS_WRITTEN.labels("upsert", "stored").inc(stored)
        ITEMS_WRITTEN.labels("upsert", "failed").inc(len(errors) - stored)
        gen = await self._after_write(tenant, stored > 0)
        outcomes = [UpsertOutcome(r.doc.asset_id, e) for r, e in zip(records, errors, strict=True)]
        return WriteSummary(outcomes, gen)

    async def upsert_stream(self, items: AsyncIterator[StreamedUpsert]) -> AsyncIterator[UpsertOutcome]:
        """One outcome per streamed item, in arrival order, each sent after its write was stored.

        At most 2 x max_batch items are read ahead. A bad tenant, or a write that failed as a whole
        (the store is unavailable), fails its items, never the stream.
        """
        read_ahead = 2 * self.settings.max_batch
        async for outcome in submit_stream(
            self._stream_writer.submit, items, max_in_flight=read_ahead, ordered=True
        ):
            yield outcome

    async def _write_streamed(self, items: list[StreamedUpsert]) -> list[UpsertOutcome]:
        """The stream batcher's batch function: one write per tenant and round (see _rounds)."""
        outcomes: list[UpsertOutcome | None] = [None] * len(items)
        by_tenant: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            try:
                validate_tenant(item.tenant)
            except InvalidArgument as exc:
                outcomes[i] = _failed(item.record.doc.asset_id, exc)
                continue
            by_tenant.setdefault(item.tenant, []).append(i)
        for tenant, indexes in by_tenant.items():
            for round_ in _rounds(indexes, lambda i: items[i].record.doc.asset_id):
                try:
                    summary = await self.upsert(
                        tenant, [items[i].record for i in round_], [items[i].wire_error for i in round_]
                    )
                    for i, outcome in zip(round_, summary.outcomes, strict=True):
                        outcomes[i] = outcome
                except DomainError as exc:  # e.g. the store is unavailable: every item of this write failed
                    for i in round_:
                        outcomes[i] = _failed(items[i].record.doc.asset_id, exc)
        return [o for o in outcomes if o is not None]

    async def _stamp_times(self, tenant: str, records: list[AssetRecord]) -> None:
        """updated_at = now; created_at kept from the stored version (or now for a new asset)."""
        now = datetime.now(UTC)
        missing = [r for r in records if r.doc.created_at is None]
        existing: dict[str, datetime | None] = {}
        if missing and await self.backend.tenant_exists(tenant):
            found = await self.backend.get(tenant, [r.doc.asset_id for r in missing], include_vectors=False)
            existing = {f.doc.asset_id: f.doc.created_at for f in found if f is not None}
        for r in records:
            if r.doc.created_at is None:
                r.doc.created_at = existing.get(r.doc.asset_id) or now
            r.doc.updated_at = now

    async def _after_write(self, tenant: str, changed: bool) -> int:
        gen = await self.cache.bump(tenant) if changed else await self.cache.generation(tenant)
        return gen or 0

    async def delete(self, tenant: str, asset_ids: list[str]) -> tuple[list[bool], int]:
        validate_tenant(tenant)
        self._check_batch(len(asset_ids), "delete")
        self._check_ids(asset_ids)
        start = time.perf_counter()
        deleted = await self.backend.delete(tenant, asset_ids)
        BACKEND_LATENCY.labels(self.backend.name, "delete").observe(time.perf_counter() - start)
        ITEMS_WRITTEN.labels("delete", "deleted").inc(sum(deleted))
        return deleted, await self._after_write(tenant, any(deleted))

    def _check_ids(self, asset_ids: list[str]) -> None:
        for i, a in enumerate(asset_ids):
            if not a or len(a) > MAX_ASSET_ID_CHARS:
                raise InvalidArgument(f"asset_ids[{i}] must be 1-{MAX_ASSET_ID_CHARS} characters")

    async def get(
        self, tenant: str, asset_ids: list[str], include_vectors: bool, include_unanalysed: bool = False
    ) -> list[AssetRecord | None]:
        """Assets by id, None where absent. An asset whose analysis is not done is absent too unless
        `include_unanalysed` (the ingest flow and the analysis worker; never an answer to a caller)."""
        validate_tenant(tenant)
        self._check_batch(len(asset_ids), "get")
        self._check_ids(asset_ids)
        if not await self.backend.tenant_exists(tenant):
            raise NotFound(f"tenant '{tenant}' has no assets (it is created by its first upsert)")
        found = await self.backend.get(tenant, asset_ids, include_vectors)
        if not include_unanalysed:
            found = [r if r is not None and analysis_done(r.doc.analysis_state) else None for r in found]
        info = await self.backend.collection_info()
        if not info.versions:
            return found
        out: list[AssetRecord | None] = []
        for r in found:
            if r is None:
                out.append(None)
                continue
            models = held_models(info, r) if include_vectors else ()
            sets = decompose(info, r) if include_vectors else {}
            first = sets.pop(info.model, None) if info.model is not None else None
            out.append(
                AssetRecord(
                    r.doc,
                    first.vector if first else r.vector,
                    first.named if first else {},
                    sets,
                    models,
                )
            )
        return out

    async def pending_analysis(self, tenant: str, limit: int) -> list[PendingAsset]:
        """Up to `limit` assets whose analysis is pending (one tenant, or every tenant for "")."""
        if tenant:
            validate_tenant(tenant)
        top = self.settings.max_batch
        if not 0 <= limit <= top:
            raise InvalidArgument(f"limit must be 1 to {top} (0: {top}), got {limit}")
        limit = limit or top
        if tenant and not await self.backend.tenant_exists(tenant):
            return []
        return await self.backend.assets_in_state(tenant or None, ANALYSIS_PENDING, limit)

    async def find_by_content_hash(self, tenant: str, digests: list[str]) -> list[ContentHashMatch]:
        """One match per requested digest, in request order, read from the store (never the result
        cache, so a write is seen at once). A tenant with no assets yet simply has no matches: duplicate
        detection asks before the tenant's first upsert."""
        validate_tenant(tenant)
        self._check_batch(len(digests), "find_by_content_hash")
        for i, d in enumerate(digests):
            if not SHA256_HEX_RE.match(d):
                raise InvalidArgument(
                    f"content_sha256[{i}] is {d[:80]!r} ({len(d)} characters): a content hash is the "
                    "SHA-256 of the original image bytes as 64 lowercase hex characters"
                )
        if not await self.backend.tenant_exists(tenant):
            return [ContentHashMatch(d) for d in digests]
        start = time.perf_counter()
        found = await self.backend.find_by_content_hash(tenant, sorted(set(digests)))
        BACKEND_LATENCY.labels(self.backend.name, "find_by_content_hash").observe(time.perf_counter() - start)
        return [ContentHashMatch(d, tuple(sorted(found.get(d, ())))) for d in digests]

    # ---- queries ---------------------------------------------------------------------------------
    async def plan(self, tenant: str = "", **query: Any) -> QueryPlan:
        """Validate a query and fill in every default (the keyword arguments of planning.plan_query).

        With a tenant, a query vector is searched in its model version's vectors, or in the tenant's
        active version's when it names no model."""
        if not tenant or query.get("vector") is None:
            if query.get("vector") is not None and query.get("vector_model") is None:
                raise InvalidArgument("vector.model needs a name and a version")
            return await plan_query(self.settings, self.backend.collection_info, **query)
        name = query.pop("vector_name", "") or PRIMARY_VECTOR
        model, stored = await self.versions.resolve(tenant, query.pop("vector_model", None), name)
        info = await self.backend.collection_info()
        plan = await plan_query(
            self.settings, self.backend.collection_info, vector_model=info.model, vector_name=stored, **query
        )
        return replace(plan, vector_model=model, vector_label=name)

    @staticmethod
    def digest(tenant: str, plan: QueryPlan) -> str:
        """The result cache's key of a planned query."""
        return plan_digest(tenant, plan)

    async def query(self, tenant: str, plan: QueryPlan, skip_cache: bool = False) -> QueryResult:
        validate_tenant(tenant)
        # The one place unanalysed assets are kept out of every query (and of its cache key): an
        # asset whose safety analysis is not done is never a hit, on any backend.
        plan = replace(plan, filter=analysed_only(plan.filter, ANALYSIS_HIDDEN))
        start = time.perf_counter()
        cache_name = self.cache.name
        if skip_cache:
            CACHE_REQUESTS.labels(cache_name, "bypass").inc()
            gen = await self.cache.generation(tenant) or 0
            hits = await self._run(tenant, plan)
            QUERY_LATENCY.labels(self.backend.name, "false").observe(time.perf_counter() - start)
            return QueryResult(hits, False, gen)
        digest = self.digest(tenant, plan)
        found = await self.cache.lookup(tenant, digest)
        if found.available and found.value is not None:
            CACHE_REQUESTS.labels(cache_name, "hit").inc()
            value = found.value
            hits = hits_from_bytes(value) if isinstance(value, bytes) else _copy_hits(value)
            _mark_vector_name(hits, plan)  # the byte codec does not carry it
            QUERY_LATENCY.labels(self.backend.name, "true").observe(time.perf_counter() - start)
            return QueryResult(hits, True, found.generation)
        CACHE_REQUESTS.labels(cache_name, "miss" if found.available else "bypass").inc()
        # Single flight: identical queries at the same generation wait for the first one's answer.
        flight = (tenant, found.generation, digest)
        pending = self._inflight.get(flight)
        if pending is not None:
            CACHE_COALESCED.inc()
            hits = _copy_hits(await asyncio.shield(pending))
            QUERY_LATENCY.labels(self.backend.name, "false").observe(time.perf_counter() - start)
            return QueryResult(hits, False, found.generation)
        future: asyncio.Future[list[Hit]] = asyncio.get_running_loop().create_future()
        self._inflight[flight] = future
        try:
            hits = await self._run(tenant, plan)
            future.set_result(hits)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it, no "never retrieved" warning
            raise
        finally:
            del self._inflight[flight]
        if found.available:
            value = hits_to_bytes(hits) if cache_name == "redis" else _copy_hits(hits)
            await self.cache.store(tenant, found.generation, digest, value)
        QUERY_LATENCY.labels(self.backend.name, "false").observe(time.perf_counter() - start)
        return QueryResult(_copy_hits(hits) if found.available else hits, False, found.generation)

    async def _run(self, tenant: str, plan: QueryPlan) -> list[Hit]:
        start = time.perf_counter()
        try:
            hits = await self.backend.query(tenant, plan)
        finally:
            BACKEND_LATENCY.labels(self.backend.name, "query").observe(time.perf_counter() - start)
        _mark_vector_name(hits, plan)
        return hits

    async def stats(self, tenant: str) -> tuple[Stats, int]:
        if tenant:
            validate_tenant(tenant)
            st = await self.backend.stats(tenant)
            return await self._with_specs(st), (await self.cache.generation(tenant) or 0)
        return await self._with_specs(await self.backend.stats(None)), 0

    async def _with_specs(self, stats: Stats) -> Stats:
        info = await self.backend.collection_info()
        return replace(stats, vectors=info.specs(), models=tuple(info.all_models()))

    # ---- model versions (services.search.versions) --------------------------------------------------

    async def model_versions(self, tenant: str, coverage: bool = False) -> ModelVersionsView:
        validate_tenant(tenant)
        gen = await self.cache.generation(tenant) or 0
        return await self.versions.view(tenant, coverage, gen)

    async def add_model_version(self, tenant: str, model: ModelRef) -> ModelVersionsView:
        validate_tenant(tenant)
        await self.versions.add(tenant, model)
        return await self.model_versions(tenant)

    async def activate_model_version(self, tenant: str, model: ModelRef) -> ModelVersionsView:
        validate_tenant(tenant)
        await self.versions.activate(tenant, model)
        await self._after_write(tenant, True)  # cached results and pages were computed for the old one
        return await self.model_versions(tenant)

    async def rollback_model_version(self, tenant: str) -> ModelVersionsView:
        validate_tenant(tenant)
        await self.versions.rollback(tenant)
        await self._after_write(tenant, True)
        return await self.model_versions(tenant)

    async def remove_model_version(self, tenant: str, model: ModelRef) -> tuple[ModelVersionsView, int]:
        """gc: the tenant stops holding the version, then its vectors are removed asset by asset (a
        rewrite of each asset without them; metadata and other versions' vectors unchanged). Safe to
        run again after a crash."""
        validate_tenant(tenant)
        await self.versions.retire(tenant, model)
        info = await self.backend.collection_info()
        slot = info.slot_of(model)
        assert slot
        prefix = slot + SLOT_SEPARATOR
        changed, cursor = 0, ""
        while await self.backend.tenant_exists(tenant):
            page, cursor = await self.backend.scan(tenant, cursor, SCAN_PAGE, include_vectors=False)
            ids = [r.doc.asset_id for r in page if any(n.startswith(prefix) for n in r.named)]
            if ids:
                async with self.versions.lock(tenant):
                    found = await self.backend.get(tenant, ids, include_vectors=True)
                    kept = [
                        AssetRecord(
                            r.doc, r.vector, {n: v for n, v in r.named.items() if not n.startswith(prefix)}
                        )
                        for r in found
                        if r is not None
                    ]
                    if kept:
                        results = await self.backend.upsert(tenant, kept)
                        changed += sum(e is None for e in results)
                await self._after_write(tenant, True)
            if not cursor:
                break
        await self._after_write(tenant, True)
        return await self.model_versions(tenant, coverage=True), changed

    async def scan(self, tenant: str, page_token: str, page_size: int) -> tuple[list[AssetRecord], str]:
        """One page of the tenant's assets (metadata and the versions each holds, no vectors)."""
        validate_tenant(tenant)
        if page_size < 0 or page_size > self.settings.max_batch:
            raise InvalidArgument(f"page_size must be in [1, {self.settings.max_batch}], got {page_size}")
        if len(page_token) > 256:
            raise InvalidArgument("page_token is not one this service handed out")
        if not await self.backend.tenant_exists(tenant):
            raise NotFound(f"tenant '{tenant}' has no assets (it is created by its first upsert)")
        info = await self.backend.collection_info()
        page, token = await self.backend.scan(tenant, page_token, page_size or 100, include_vectors=False)
        return [AssetRecord(r.doc, models=held_models(info, r)) for r in page], token

    async def index_generation(self, tenant: str) -> int | None:
        """The tenant's generation for validating derived caches (None: do not trust it now)."""
        validate_tenant(tenant)
        return await self.cache.consistent_generation(tenant)


def _value_problem(doc: AssetDoc) -> str | None:
    """What is wrong with an asset's numbers (the ranges common.proto documents), or None.

    Scores and boosts are computed from these; a NaN or an infinity would poison every ranking that
    reads the asset (a NaN compares false with everything, so it can sort first), so it is refused
    at the door instead. `not 0 <= x <= 1` is also true for NaN.
    """
    if not math.isfinite(doc.popularity) or doc.popularity < 0:
        return f"asset.popularity must be a finite number >= 0, got {doc.popularity}"
    if not 0.0 <= doc.safety_score <= 1.0:
        return f"asset.safety_score must be in [0, 1], got {doc.safety_score}"
    for i, label in enumerate(doc.safety_labels):
        if not 0.0 <= label.score <= 1.0:
            return f"asset.safety_labels[{i}].score must be in [0, 1], got {label.score}"
    return None


def _failed(asset_id: str, exc: DomainError) -> UpsertOutcome:
    return UpsertOutcome(asset_id, ItemFailure(status_number(exc.code), exc.message))


def _rounds(indexes: list[int], asset_id: Callable[[int], str]) -> list[list[int]]:
    """Split one tenant's streamed items into consecutive writes in which no asset id repeats, so a
    later version of an asset is written after the earlier one (one write rejects repeated ids)."""
    rounds: list[list[int]] = []
    written: list[set[str]] = []
    for i in indexes:
        aid = asset_id(i)
        n = next((k for k, ids in enumerate(written) if aid not in ids), len(rounds))
        if n == len(rounds):
            rounds.append([])
            written.append(set())
        rounds[n].append(i)
        written[n].add(aid)
    return rounds


def _mark_vector_name(hits: list[Hit], plan: QueryPlan) -> None:
    if plan.uses_vector:
        for h in hits:
            h.scores.vector_name = plan.vector_label
            h.vector_model = plan.vector_model


def _copy_hits(hits: list[Hit]) -> list[Hit]:
    """Shallow copies: callers may not mutate what the memory cache holds."""
    return [replace(h, scores=replace(h.scores)) for h in hits]
