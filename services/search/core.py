"""The search service's domain logic: validation, query planning, model checks, cache use.

No gRPC or protobuf here: the servicer maps messages to these calls. The backend (Weaviate or embedded)
and the cache (Redis, memory, none) are chosen by settings and injected.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import structlog

from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    status_number,
)
from services.search.backends.base import SearchBackend
from services.search.cache import ResultCache
from services.search.codec import hits_from_bytes, hits_to_bytes
from services.search.domain import (
    DEFAULT_KEYWORD_FIELDS,
    KEYWORD_FIELDS,
    MAX_ASSET_ID_CHARS,
    SHA256_HEX_RE,
    TENANT_RE,
    AssetRecord,
    ContentHashMatch,
    Fusion,
    Hit,
    ItemFailure,
    ModelRef,
    QueryPlan,
    QueryResult,
    Stats,
    UpsertOutcome,
    WriteSummary,
)
from services.search.filters import FilterNode, canonical, count_nodes
from services.search.metrics import (
    BACKEND_LATENCY,
    CACHE_COALESCED,
    CACHE_REQUESTS,
    ITEMS_WRITTEN,
    QUERY_LATENCY,
)
from services.search.settings import SearchSettings

log = structlog.get_logger("search.core")

_INVALID = status_number(InvalidArgument.code)
_PRECONDITION = status_number(FailedPrecondition.code)
DEFAULT_LIMIT = 10
MIN_WINDOW = 100  # Weaviate's hybrid legs fetch at least 100 candidates


def validate_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant or ""):
        raise InvalidArgument(
            f"tenant {tenant!r} is invalid: 1-64 characters from letters, digits, '-' and '_'"
        )
    return tenant


def validate_vector(values: np.ndarray, what: str) -> np.ndarray:
    """Finite and non-zero; returned L2-normalised (cosine is scale-free; the graph wants unit length)."""
    if values.ndim != 1 or len(values) == 0:
        raise InvalidArgument(f"{what} is empty")
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise InvalidArgument(f"{what} has a non-finite value ({values[bad]}) at index {bad}")
    norm = float(np.linalg.norm(values))
    if norm == 0.0:
        raise InvalidArgument(f"{what} is all zeros")
    return (values / norm).astype(np.float32)


class SearchCore:
    def __init__(self, settings: SearchSettings, backend: SearchBackend, cache: ResultCache) -> None:
        self.settings = settings
        self.backend = backend
        self.cache = cache
        self._inflight: dict[tuple[str, int, str], asyncio.Future[list[Hit]]] = {}
        self._model_lock = asyncio.Lock()

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

    def _item_error(self, rec: AssetRecord) -> ItemFailure | None:
        aid = rec.doc.asset_id
        if not aid or len(aid) > MAX_ASSET_ID_CHARS:
            return ItemFailure(
                _INVALID, f"asset_id must be 1-{MAX_ASSET_ID_CHARS} characters, got {len(aid)}"
            )
        if rec.vector is None:
            return ItemFailure(_INVALID, "image_embedding is required")
        m = rec.doc.embedding_model
        if m is None or not m.name or not m.version:
            return ItemFailure(_INVALID, "image_embedding.model needs a name and a version")
        try:
            rec.vector = validate_vector(rec.vector, "image_embedding")
        except InvalidArgument as exc:
            return ItemFailure(_INVALID, exc.message)
        return None

    async def upsert(
        self, tenant: str, records: list[AssetRecord], wire_errors: list[ItemFailure | None] | None = None
    ) -> WriteSummary:
        """Validate every item, write the valid ones, bump the tenant's generation if anything was stored.

        `wire_errors` carries problems found while decoding items (they fail those items only).
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
        model, dim = await self._collection_model(first)
        for i, r in enumerate(records):
            if errors[i] is not None:
                continue
            assert r.vector is not None
            if dim and len(r.vector) != dim:
                errors[i] = ItemFailure(
                    _INVALID, f"image_embedding has dimension {len(r.vector)}; the collection's is {dim}"
                )
            elif model is not None and r.doc.embedding_model != model:
                errors[i] = ItemFailure(
                    _PRECONDITION,
                    f"image_embedding comes from model {r.doc.embedding_model}; the collection holds {model} "
                    "(re-embed the asset with that model, or re-index the collection)",
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

    async def get(self, tenant: str, asset_ids: list[str], include_vectors: bool) -> list[AssetRecord | None]:
        validate_tenant(tenant)
        self._check_batch(len(asset_ids), "get")
        self._check_ids(asset_ids)
        if not await self.backend.tenant_exists(tenant):
            raise NotFound(f"tenant '{tenant}' has no assets (it is created by its first upsert)")
        return await self.backend.get(tenant, asset_ids, include_vectors)

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

    async def plan(
        self,
        *,
        text: str,
        vector: np.ndarray | None,
        vector_model: ModelRef | None,
        alpha: float | None,
        fusion: Fusion,
        filter: FilterNode | None,
        limit: int,
        offset: int,
        window: int,
        keyword_fields: list[tuple[str, float]],
        include_vectors: bool,
    ) -> QueryPlan:
        """Validate a query and fill in every default (see QueryRequest in search.proto)."""
        s = self.settings
        if len(text) > s.max_query_chars:
            raise InvalidArgument(f"text has {len(text)} characters; at most {s.max_query_chars}")
        has_text = bool(text.strip())
        if vector is not None:
            if vector_model is None or not vector_model.name or not vector_model.version:
                raise InvalidArgument("vector.model needs a name and a version")
            vector = validate_vector(vector, "vector")
            info = await self.backend.collection_info()
            if info.model is None:
                raise NotFound("no asset has been stored yet, so there is nothing to search")
            if len(vector) != info.dimension:
                raise InvalidArgument(
                    f"vector has dimension {len(vector)}; the collection's is {info.dimension}"
                )
            if vector_model != info.model:
                raise FailedPrecondition(
                    f"vector comes from model {vector_model}; the collection holds {info.model} "
                    "(embed the query with that model)"
                )
        if not has_text and vector is None:
            raise InvalidArgument("a query needs `text`, `vector`, or both")
        if alpha is None:
            alpha = 0.75 if (has_text and vector is not None) else (1.0 if vector is not None else 0.0)
        if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
            raise InvalidArgument(f"alpha must be in [0, 1], got {alpha}")
        if alpha < 1.0 and alpha > 0.0 and vector is None:
            raise InvalidArgument(f"alpha {alpha} weights a vector leg but no `vector` was given")
        if alpha == 1.0 and vector is None:
            raise InvalidArgument("alpha = 1 runs only the vector leg: give a `vector` (or lower alpha)")
        if alpha == 0.0 and not has_text:
            raise InvalidArgument("alpha = 0 runs only the keyword leg: give `text` (or raise alpha)")
        if limit < 0 or limit > s.max_limit:
            raise InvalidArgument(f"limit must be in [1, {s.max_limit}], got {limit}")
        limit = limit or DEFAULT_LIMIT
        if offset < 0 or offset > s.max_offset:
            raise InvalidArgument(f"offset must be in [0, {s.max_offset}], got {offset}")
        if offset + limit > s.max_candidate_window:
            raise InvalidArgument(
                f"offset + limit = {offset + limit} exceeds the {s.max_candidate_window}-result window"
            )
        if window < 0 or window > s.max_candidate_window:
            raise InvalidArgument(f"candidate_window must be in [0, {s.max_candidate_window}], got {window}")
        window = max(window, MIN_WINDOW, offset + limit)
        fields = self._keyword_fields(keyword_fields)
        if filter is not None and count_nodes(filter) > s.max_filter_nodes:
            raise InvalidArgument(f"the filter has more than {s.max_filter_nodes} nodes")
        return QueryPlan(
            text=text,
            vector=vector,
            alpha=float(alpha),
            fusion=fusion,
            filter=filter,
            limit=limit,
            offset=offset,
            window=window,
            keyword_fields=fields,
            include_vectors=include_vectors,
        )

    @staticmethod
    def _keyword_fields(given: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
        if not given:
            return DEFAULT_KEYWORD_FIELDS
        out: dict[str, float] = {}
        for name, boost in given:
            if name not in KEYWORD_FIELDS:
                raise InvalidArgument(
                    f"unknown keyword field '{name}'; searchable fields: {', '.join(KEYWORD_FIELDS)}"
                )
            if name in out:
                raise InvalidArgument(f"keyword field '{name}' is given twice")
            boost = 1.0 if boost == 0 else float(boost)
            if not math.isfinite(boost) or boost < 0:
                raise InvalidArgument(f"keyword field '{name}': boost must be a positive number, got {boost}")
            out[name] = boost
        return tuple(out.items())

    @staticmethod
    def digest(tenant: str, plan: QueryPlan) -> str:
        """Canonical cache key of every query input (filters normalised, vector hashed)."""
        vec = None
        if plan.vector is not None:
            vec = hashlib.sha256(plan.vector.astype("<f4").tobytes()).hexdigest()
        key: dict[str, Any] = {
            "tenant": tenant,
            "text": plan.text,
            "vector": vec,
            "alpha": repr(plan.alpha),
            "fusion": plan.fusion.value,
            "filter": canonical(plan.filter),
            "limit": plan.limit,
            "offset": plan.offset,
            "window": plan.window,
            "fields": sorted([n, repr(b)] for n, b in plan.keyword_fields),
            "vectors": plan.include_vectors,
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    async def query(self, tenant: str, plan: QueryPlan, skip_cache: bool = False) -> QueryResult:
        validate_tenant(tenant)
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
            return await self.backend.query(tenant, plan)
        finally:
            BACKEND_LATENCY.labels(self.backend.name, "query").observe(time.perf_counter() - start)

    async def stats(self, tenant: str) -> tuple[Stats, int]:
        if tenant:
            validate_tenant(tenant)
            st = await self.backend.stats(tenant)
            return st, (await self.cache.generation(tenant) or 0)
        return await self.backend.stats(None), 0

    async def index_generation(self, tenant: str) -> int | None:
        """The tenant's generation for validating derived caches (None: do not trust it now)."""
        validate_tenant(tenant)
        return await self.cache.consistent_generation(tenant)


def _copy_hits(hits: list[Hit]) -> list[Hit]:
    """Shallow copies: callers may not mutate what the memory cache holds."""
    return [replace(h, scores=replace(h.scores)) for h in hits]
