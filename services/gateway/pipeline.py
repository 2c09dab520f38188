"""The gateway's two journeys, search and ingest, over the encoder and search clients.

Search: authorise -> visibility (policy filters) -> page token -> encode the query (text and/or
image; cached per text) -> first stage (hybrid query with the policy filters ANDed in, a candidate
window with stored vectors) -> policy re-check of every hit -> rerank -> one page.
Encoder trouble on a text query degrades to keyword-only (alpha 0) with `degraded_reasons`.

Ingest: per item, concurrently up to `max_in_flight`: validate -> sha256 -> (same id, same bytes,
same metadata: UNCHANGED, no write) -> decode + safety + OCR (threads) alongside encoding
(micro-batched EncodeImages) -> duplicate lookup by content hash -> upsert (micro-batched
UpsertAssets) -> acknowledge only after the search service confirmed the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import grpc
import numpy as np
import structlog

from services.common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    status_number,
)
from services.gateway import paging
from services.gateway.analysis import Analysis, check_image, decode_rgb
from services.gateway.auth import Principal
from services.gateway.batching import LRUCache, MicroBatcher
from services.gateway.clients import (
    BackendError,
    BackendUnavailable,
    EncodedBatch,
    EncoderClient,
    SearchClient,
)
from services.gateway.clients import UpsertRecord as _UpsertRecord
from services.gateway.model import (
    Asset,
    Condition,
    Hit,
    IngestAck,
    IngestItem,
    IngestOutcome,
    ModelRef,
    Not,
    Op,
    QueryResult,
    QuerySpec,
    RerankOptions,
    SearchPage,
    SearchQuery,
    SearchResult,
    StageScores,
    UpsertOutcome,
    Vector,
    all_of,
    canonical,
)
from services.gateway.policy import Policy, Visibility
from services.gateway.rerank import Ranked, RerankConfig, RerankTrace, rerank

log = structlog.get_logger("pipeline")

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_TEXT_CHARS = 1000
MAX_ASSET_ID_CHARS = 256


class Analyzer(Protocol):
    @property
    def enabled(self) -> bool: ...

    async def analyze(self, rgb: np.ndarray) -> Analysis: ...


@dataclass(frozen=True)
class PipelineConfig:
    default_alpha: float = 0.75
    rerank: RerankConfig = field(default_factory=RerankConfig)
    candidate_window: int = 100
    ingest_max_bytes: int = 20 * 1024 * 1024
    ingest_max_pixels: int = 40_000_000
    max_in_flight: int = 128
    encode_batch: int = 16
    encode_concurrency: int = 2
    upsert_batch: int = 64
    batch_wait_s: float = 0.005
    encode_batch_bytes: int = 24 * 1024 * 1024
    query_vector_cache: int = 4096
    query_vector_ttl_s: float = 600.0
    page_cache_entries: int = 4096
    page_cache_ttl_s: float = 60.0


@dataclass(frozen=True)
class _PageRequest:
    """Who asks for which page of which query: what every search mode shares past validation."""

    principal: Principal
    action: str
    vis: Visibility
    bound: str  # the page-token binding: every input that shapes the result (also the cache key)
    offset: int
    page_size: int
    disable_rerank: bool

    @property
    def cache_key(self) -> tuple[str, int]:
        return (self.bound, self.offset)


def _unit(v: Vector) -> Vector:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v


def _degrading(exc: BaseException) -> bool:
    """Encoder failures that degrade a text search to keyword-only instead of failing it."""
    if isinstance(exc, BackendUnavailable):
        return True
    return isinstance(exc, BackendError) and exc.code.name == "DEADLINE_EXCEEDED"


class Gateway:
    def __init__(
        self,
        encoder: EncoderClient,
        search: SearchClient,
        policy: Policy,
        analyzer: Analyzer,
        config: PipelineConfig,
        page_tokens: paging.PageTokens,
    ) -> None:
        self.encoder = encoder
        self.search_client = search
        self.policy = policy
        self.analyzer = analyzer
        self.cfg = config
        self.tokens = page_tokens
        self._text_vectors: LRUCache[str, tuple[Vector, ModelRef | None]] = LRUCache(
            config.query_vector_cache, config.query_vector_ttl_s
        )
        # Query images repeat too ("more of this", pagination): keyed by content hash.
        self._image_vectors: LRUCache[str, tuple[Vector, ModelRef | None]] = LRUCache(
            max(1, config.query_vector_cache // 4), config.query_vector_ttl_s
        )
        # Finished result pages, keyed by everything that shaped them (the page-token binding, which
        # covers the caller's visibility, plus the offset) and valid only at the index generation
        # they were computed at: a hit skips the encoder, the first stage and the rerank.
        self._pages: LRUCache[tuple[str, int], tuple[int, SearchPage, Asset | None]] = LRUCache(
            max(1, config.page_cache_entries), config.page_cache_ttl_s
        )
        self._highest_generation: dict[str, int] = {}
        self._model: ModelRef | None = None
        self._encode_batcher: MicroBatcher[bytes, Any] = MicroBatcher(
            self._encode_images,
            max_items=config.encode_batch,
            wait_s=config.batch_wait_s,
            max_concurrent=config.encode_concurrency,
            max_bytes=config.encode_batch_bytes,
            size_of=len,
        )
        self._upsert_batchers: dict[str, MicroBatcher[_UpsertRecord, UpsertOutcome]] = {}
        self._lookup_batchers: dict[str, MicroBatcher[Any, Any]] = {}
        self._dup_batchers: dict[str, MicroBatcher[Any, Any]] = {}
        self._id_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._sha_claims: dict[tuple[str, str], asyncio.Future[str | None]] = {}
        self.stage_seconds: dict[str, float] = {}  # ingest: wall time items spent per stage, summed
        self.last_trace: RerankTrace | None = None  # the latest rerank's trace (benchmarks, debugging)

    # ------------------------------------------------------------------------------------------
    # Search service reads: an empty tenant or store is "nothing found", not an error

    async def _query(self, spec: QuerySpec) -> QueryResult:
        try:
            return await self.search_client.query(spec)
        except BackendError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:  # nothing stored yet (in the tenant or at all)
                return QueryResult([])
            raise

    async def _get(self, tenant: str, asset_ids: list[str], include_vectors: bool) -> list[Hit]:
        try:
            found, _missing = await self.search_client.get_assets(tenant, asset_ids, include_vectors)
        except BackendError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:  # the tenant has no assets yet
                return []
            raise
        return found

    # ------------------------------------------------------------------------------------------
    # Search

    def _page_request(
        self, principal: Principal, action: str, vis: Visibility, bound: str, q: SearchQuery, page_size: int
    ) -> _PageRequest:
        """The page asked for; its token must verify against `bound` (INVALID_ARGUMENT otherwise)."""
        offset = self.tokens.offset(q.page_token, bound)
        return _PageRequest(principal, action, vis, bound, offset, page_size, q.rerank.disable)

    async def _cached_page(self, ask: _PageRequest) -> tuple[SearchPage | None, int | None]:
        """(a cached page still valid, or None; the tenant's generation to store a new page at, or
        None when pages must not be cached now)."""
        if self.cfg.page_cache_entries <= 0:
            return None, None
        principal = ask.principal
        gen = await self.search_client.index_generation(principal.tenant)
        if gen is None:
            return None, None
        if gen < self._highest_generation.get(principal.tenant, 0):
            # Generations went backwards: the shared cache was reset, so an old generation number
            # may come round again with different data. Forget every page.
            log.warning("index generation went backwards; page cache cleared", tenant=principal.tenant)
            self._pages.clear()
        self._highest_generation[principal.tenant] = gen
        entry = self._pages.get(ask.cache_key)
        if entry is None or entry[0] != gen:
            return None, gen
        _, page, source = entry
        # Policy is re-checked on every hit (a licence may have expired since the page was computed),
        # for "more like this" also on the source asset: an invisible source is NOT_FOUND, cached or not.
        if source is not None and self.policy.denial(ask.vis, source) is not None:
            return None, gen
        admitted = self.policy.screen(principal, ask.action, ask.vis, [r.asset for r in page.results])
        if len(admitted) != len(page.results):
            return None, gen
        return replace(page, cached=True), gen

    def _keep_page(
        self, ask: _PageRequest, generation: int | None, page: SearchPage, source: Asset | None = None
    ) -> None:
        # Degraded pages (encoder down: keyword-only) must not outlive the outage.
        if generation is not None and not page.degraded and self.cfg.page_cache_entries > 0:
            self._pages.put(ask.cache_key, (generation, page, source))

    def _rerank_config(self, opts: RerankOptions, alpha: float) -> tuple[RerankConfig, int]:
        base = self.cfg.rerank

        def pick(name: str, value: float | None, default: float) -> float:
            if value is None:
                return default
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"rerank.{name} must be in [0, 1], got {value}")
            return float(value)

        window = self.cfg.candidate_window if opts.candidate_window is None else opts.candidate_window
        if not 1 <= window <= 1000:
            raise InvalidArgument(f"rerank.candidate_window must be 1-1000, got {window}")
        cfg = RerankConfig(
            text_weight=pick("text_weight", opts.text_weight, base.text_weight),
            mmr_lambda=pick("mmr_lambda", opts.mmr_lambda, base.mmr_lambda),
            duplicate_threshold=pick(
                "duplicate_threshold", opts.duplicate_threshold, base.duplicate_threshold
            ),
            freshness_weight=pick("freshness_weight", opts.freshness_weight, base.freshness_weight),
            popularity_weight=pick("popularity_weight", opts.popularity_weight, base.popularity_weight),
            freshness_half_life_days=base.freshness_half_life_days,
            alpha=alpha,
        )
        return cfg, window

    @staticmethod
    def _page_size(n: int) -> int:
        if n == 0:
            return DEFAULT_PAGE_SIZE
        if not 1 <= n <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE}, got {n}")
        return n

    async def _text_vector(self, text: str) -> tuple[Vector, ModelRef | None]:
        cached = self._text_vectors.get(text)
        if cached is not None:
            return cached
        batch = await self.encoder.encode_texts([text])
        item = batch.items[0]
        if item.vector is None:
            raise InvalidArgument(f"query text rejected by the encoder: {item.error_message}")
        self._note_model(batch.model)
        value = (item.vector, batch.model)
        self._text_vectors.put(text, value)
        return value

    def _note_model(self, model: ModelRef | None) -> None:
        if model is not None and model != self._model:
            if self._model is not None:
                log.info("encoder model changed; query vector caches cleared", old=self._model, new=model)
                self._text_vectors.clear()
                self._image_vectors.clear()
            self._model = model

    async def _image_vector(self, image: bytes) -> tuple[Vector, ModelRef | None]:
        key = hashlib.sha256(image).hexdigest()
        cached = self._image_vectors.get(key)
        if cached is not None:
            return cached
        check_image(image, self.cfg.ingest_max_bytes, self.cfg.ingest_max_pixels)
        batch = await self.encoder.encode_images([image])
        item = batch.items[0]
        if item.vector is None:
            raise InvalidArgument(f"query image rejected by the encoder: {item.error_message}")
        self._note_model(batch.model)
        value = (item.vector, batch.model)
        self._image_vectors.put(key, value)
        return value

    async def search(self, principal: Principal, q: SearchQuery) -> SearchPage:
        action = "search"
        self.policy.authorize(principal, action)
        if not q.text.strip() and not q.image:
            raise InvalidArgument("give a query text, an example image, or both")
        if len(q.text) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"query text is {len(q.text)} characters; the limit is {MAX_TEXT_CHARS}")
        if q.alpha is not None and not 0.0 <= q.alpha <= 1.0:
            raise InvalidArgument(f"alpha must be in [0, 1], got {q.alpha}")
        page_size = self._page_size(q.page_size)
        vis = self.policy.visibility(
            principal, action, requested_licenses=q.licenses, include_unsafe=q.include_unsafe
        )
        bound = paging.binding(
            "search",
            vis.cache_key(),
            q.text,
            hashlib.sha256(q.image).hexdigest() if q.image else "",
            canonical(q.filter),
            q.alpha,
            q.rerank,
            page_size,
        )
        ask = self._page_request(principal, action, vis, bound, q, page_size)
        hit, generation = await self._cached_page(ask)
        if hit is not None:
            return hit

        degraded: list[str] = []
        text_vec: Vector | None = None
        image_vec: Vector | None = None
        model: ModelRef | None = None
        text = q.text.strip()
        kinds: list[str] = []
        coros: list[Any] = []
        if text:
            kinds.append("text")
            coros.append(self._text_vector(text))
        if q.image:
            kinds.append("image")
            coros.append(self._image_vector(q.image))
        outcomes = await asyncio.gather(*coros, return_exceptions=True)
        for kind, outcome in zip(kinds, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, DomainError):
                    raise outcome
                if not _degrading(outcome):
                    raise outcome
                if not text:
                    raise Unavailable(
                        f"image search needs the encoder, which is unavailable ({outcome.message}); "
                        "text queries still work (keyword-only)"
                    ) from None
                degraded.append(f"encoder unavailable ({outcome.message}): keyword-only results")
                if kind == "image":
                    degraded.append("the example image was ignored")
            elif kind == "text":
                text_vec, model = outcome
            else:
                image_vec, model = outcome
        if degraded:
            text_vec = image_vec = None  # a half-encoded text+image query would silently change meaning

        alpha = self.cfg.default_alpha if q.alpha is None else q.alpha
        query_vec: Vector | None
        cfg, window = self._rerank_config(q.rerank, alpha if text else 1.0)
        if text_vec is not None and image_vec is not None:
            query_vec = _unit(cfg.text_weight * text_vec + (1 - cfg.text_weight) * image_vec)
        else:
            query_vec = text_vec if text_vec is not None else image_vec
        if query_vec is None:
            first_alpha: float | None = 0.0
            cfg = replace(cfg, alpha=0.0)
        else:
            first_alpha = alpha if text else 1.0
        spec = QuerySpec(
            tenant=principal.tenant,
            text=text,
            vector=query_vec,
            model=model,
            alpha=first_alpha,
            filter=all_of(q.filter, vis.filter(self.policy.granularity_s)),
        )
        page = await self._ranked_page(
            ask, spec, cfg, window, text_vec=text_vec, image_vec=image_vec, exclude=""
        )
        page.degraded_reasons = degraded
        page.model = model
        self._keep_page(ask, generation, page)
        return page

    async def search_similar(self, principal: Principal, q: SearchQuery) -> SearchPage:
        action = "search_similar"
        self.policy.authorize(principal, action, target=q.similar_to)
        if not q.similar_to:
            raise InvalidArgument("asset_id is required")
        page_size = self._page_size(q.page_size)
        vis = self.policy.visibility(principal, action, include_unsafe=q.include_unsafe)
        bound = paging.binding(
            "similar", vis.cache_key(), q.similar_to, canonical(q.filter), q.rerank, page_size
        )
        ask = self._page_request(principal, action, vis, bound, q, page_size)
        hit, generation = await self._cached_page(ask)
        if hit is not None:
            return hit
        source = await self._visible_asset(principal, action, vis, q.similar_to, include_vector=True)
        if source.vector is None:
            raise FailedPrecondition(f"asset {q.similar_to!r} has no stored embedding to compare with")
        caption = source.asset.caption.strip()[:MAX_TEXT_CHARS]
        alpha = self.cfg.default_alpha if caption else 1.0
        cfg, window = self._rerank_config(q.rerank, alpha)
        spec = QuerySpec(
            tenant=principal.tenant,
            text=caption,
            vector=source.vector,
            model=source.asset.embedding_model,
            alpha=alpha,
            filter=all_of(
                q.filter,
                vis.filter(self.policy.granularity_s),
                Not(Condition("asset_id", Op.EQUAL, q.similar_to)),
            ),
        )
        page = await self._ranked_page(
            ask, spec, cfg, window, text_vec=None, image_vec=source.vector, exclude=q.similar_to
        )
        self._keep_page(ask, generation, page, source=source.asset)
        return page

    async def _ranked_page(
        self,
        ask: _PageRequest,
        spec: QuerySpec,
        cfg: RerankConfig,
        window: int,
        *,
        text_vec: Vector | None,
        image_vec: Vector | None,
        exclude: str,
    ) -> SearchPage:
        principal, action, vis = ask.principal, ask.action, ask.vis
        offset, page_size, bound = ask.offset, ask.page_size, ask.bound
        if ask.disable_rerank:
            # First-stage order: page straight through the search service (one extra hit says
            # whether another page exists).
            if offset + page_size > 10_000:
                raise InvalidArgument("cannot page beyond 10000 results; refine the query")
            result = await self._query(replace(spec, limit=page_size + 1, offset=offset))
            hits = [h for h in result.hits if h.asset.asset_id != exclude]
            more = len(hits) > page_size
            hits = hits[:page_size]
            admitted = self.policy.screen(principal, action, vis, [h.asset for h in hits])
            results = [
                SearchResult(
                    asset=hits[i].asset,
                    scores=StageScores(
                        keyword=hits[i].scores.keyword,
                        vector=hits[i].scores.vector,
                        fused=hits[i].scores.fused,
                        final=hits[i].scores.fused,
                        first_stage_rank=offset + i + 1,
                    ),
                    policy_reasons=self.policy.reasons(vis, hits[i].asset),
                )
                for i in admitted
            ]
            token = self.tokens.issue(bound, offset + page_size) if more else ""
            return SearchPage(results, token, cached=result.cached)

        if offset >= window:
            return SearchPage([], "")
        result = await self._query(
            replace(spec, limit=window, offset=0, candidate_window=max(window, 100), include_vectors=True)
        )
        hits = [h for h in result.hits if h.asset.asset_id != exclude]
        admitted = self.policy.screen(principal, action, vis, [h.asset for h in hits])
        screened = [hits[i] for i in admitted]
        ranked, trace = rerank(
            screened,
            cfg,
            text_vector=text_vec,
            image_vector=image_vec,
            now=vis.now,
            top_k=offset + page_size + 1,
        )
        self.last_trace = trace
        page = ranked[offset : offset + page_size]
        results = [_result(r, self.policy.reasons(vis, r.hit.asset)) for r in page]
        more = offset + page_size < len(ranked)
        token = self.tokens.issue(bound, offset + page_size) if more else ""
        return SearchPage(results, token, cached=result.cached)

    async def _visible_asset(
        self, principal: Principal, action: str, vis: Visibility, asset_id: str, include_vector: bool = False
    ) -> Hit:
        found = await self._get(principal.tenant, [asset_id], include_vector)
        hit = next((h for h in found if h.asset.asset_id == asset_id), None)
        if hit is None:
            raise NotFound(f"asset {asset_id!r} not found in tenant {principal.tenant!r}")
        ok, reasons = self.policy.admit(vis, hit.asset)
        if not ok:
            self.policy.audit.record(principal, action, "deny", reasons[-1], asset_id=asset_id)
            # Same answer as absent: the caller must not learn that an invisible asset exists.
            raise NotFound(f"asset {asset_id!r} not found in tenant {principal.tenant!r}")
        return hit

    async def get_asset(self, principal: Principal, asset_id: str) -> tuple[Asset, list[str]]:
        action = "get_asset"
        self.policy.authorize(principal, action, target=asset_id)
        if not asset_id:
            raise InvalidArgument("asset_id is required")
        vis = self.policy.visibility(principal, action)
        hit = await self._visible_asset(principal, action, vis, asset_id)
        _, reasons = self.policy.admit(vis, hit.asset)
        return hit.asset, reasons

    async def delete_asset(self, principal: Principal, asset_id: str) -> None:
        action = "delete_asset"
        self.policy.authorize(principal, action, target=asset_id)
        if not asset_id:
            raise InvalidArgument("asset_id is required")
        try:
            results = await self.search_client.delete_assets(principal.tenant, [asset_id])
        except BackendError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
            results = []
        if not any(aid == asset_id and deleted for aid, deleted in results):
            raise NotFound(f"asset {asset_id!r} not found in tenant {principal.tenant!r}")

    # ------------------------------------------------------------------------------------------
    # Ingest

    async def _encode_images(self, images: list[bytes]) -> list[Any]:
        batch: EncodedBatch = await self.encoder.encode_images(images)
        self._note_model(batch.model)
        return [(item, batch.model) for item in batch.items]

    def _batcher(
        self,
        registry: dict[str, MicroBatcher[Any, Any]],
        tenant: str,
        fn: Callable[[str, list[Any]], Awaitable[Sequence[Any]]],
    ) -> MicroBatcher[Any, Any]:
        """A per-tenant batcher of single-item reads into one search call (one call in flight)."""
        batcher = registry.get(tenant)
        if batcher is None:
            batcher = MicroBatcher(
                functools.partial(fn, tenant), max_items=self.cfg.upsert_batch, wait_s=self.cfg.batch_wait_s
            )
            registry[tenant] = batcher
        return batcher

    async def _lookup(self, tenant: str, asset_ids: list[str]) -> list[Hit | None]:
        """Stored assets (with vectors) by id, in order; None where absent. One GetAssets call."""
        found = await self._get(tenant, list(dict.fromkeys(asset_ids)), include_vectors=True)
        by_id = {h.asset.asset_id: h for h in found}
        return [by_id.get(a) for a in asset_ids]

    async def _find_duplicates(self, tenant: str, probes: list[_DupProbe]) -> list[str | None]:
        """For each probe, the id of another stored asset with the same bytes (or None). One Query:
        the vector leg pre-filtered to `content_sha256 IN (...)` returns every stored match (the
        filter matches at most a few objects per hash, and the limit leaves room for all)."""
        shas = tuple(dict.fromkeys(p.sha for p in probes))
        result = await self._query(
            QuerySpec(
                tenant=tenant,
                vector=probes[0].vector,
                model=probes[0].model,
                alpha=1.0,
                filter=Condition("content_sha256", Op.IN, shas),
                limit=min(1000, 4 * len(shas) + 8),
                skip_cache=True,
            )
        )
        holders: dict[str, list[str]] = {}
        for h in result.hits:
            holders.setdefault(h.asset.content_sha256, []).append(h.asset.asset_id)
        out: list[str | None] = []
        for p in probes:
            others = sorted(a for a in holders.get(p.sha, []) if a != p.asset_id)
            out.append(others[0] if others else None)
        return out

    def _upserter(self, tenant: str) -> MicroBatcher[_UpsertRecord, UpsertOutcome]:
        batcher = self._upsert_batchers.get(tenant)
        if batcher is None:

            async def send(records: list[_UpsertRecord]) -> Sequence[UpsertOutcome]:
                return await self.search_client.upsert(tenant, records)

            # One write in flight per tenant: the next batch grows while it runs (index commits
            # have a fixed cost per call, so bigger batches are cheaper per item).
            batcher = MicroBatcher(send, max_items=self.cfg.upsert_batch, wait_s=self.cfg.batch_wait_s)
            self._upsert_batchers[tenant] = batcher
        return batcher

    async def ingest(
        self, principal: Principal, items: AsyncIterator[IngestItem]
    ) -> AsyncIterator[IngestAck]:
        """One acknowledgement per item, as each completes (match on asset_id)."""
        self.policy.authorize(principal, "ingest")
        acks: asyncio.Queue[IngestAck | None] = asyncio.Queue()
        slots = asyncio.Semaphore(self.cfg.max_in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def one(item: IngestItem) -> None:
            try:
                ack = await self.ingest_one(principal, item)
            finally:
                slots.release()
            await acks.put(ack)

        async def read() -> None:
            try:
                async for item in items:
                    await slots.acquire()  # bounded in flight: the client's stream waits (flow control)
                    task = asyncio.create_task(one(item))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while tasks:
                    await asyncio.gather(*list(tasks))
            finally:
                await acks.put(None)

        reader = asyncio.create_task(read())
        started = time.perf_counter()
        outcomes: dict[str, int] = {}
        encode_batches = len(self._encode_batcher.batch_sizes)
        stages_before = dict(self.stage_seconds)
        try:
            while (ack := await acks.get()) is not None:
                outcomes[ack.outcome.name] = outcomes.get(ack.outcome.name, 0) + 1
                yield ack
            await reader  # re-raise a failure of the request stream itself
        finally:
            reader.cancel()
            for t in list(tasks):
                t.cancel()
            sizes = self._encode_batcher.batch_sizes[encode_batches:]
            upserts = self._upsert_batchers.get(principal.tenant)
            items_done = max(1, sum(outcomes.values()))
            stage_ms = {
                k: round((v - stages_before.get(k, 0.0)) * 1000 / items_done, 1)
                for k, v in self.stage_seconds.items()
            }
            log.info(
                "ingest stream done",
                mean_stage_ms=stage_ms,
                tenant=principal.tenant,
                outcomes=outcomes,
                seconds=round(time.perf_counter() - started, 3),
                encode_calls=len(sizes),
                mean_encode_batch=round(sum(sizes) / len(sizes), 1) if sizes else 0,
                mean_upsert_batch=round(sum(upserts.batch_sizes) / len(upserts.batch_sizes), 1)
                if upserts and upserts.batch_sizes
                else 0,
            )

    async def ingest_one(self, principal: Principal, item: IngestItem) -> IngestAck:
        try:
            return await self._ingest_one(principal, item)
        except DomainError as exc:
            return IngestAck(item.asset_id, IngestOutcome.FAILED, status_number(exc.code), exc.message)
        except Exception:
            log.exception("ingest item failed", asset_id=item.asset_id)
            return IngestAck(
                item.asset_id, IngestOutcome.FAILED, 13, "internal error while ingesting this item"
            )

    async def _ingest_one(self, principal: Principal, item: IngestItem) -> IngestAck:
        tenant = principal.tenant
        if not 1 <= len(item.asset_id) <= MAX_ASSET_ID_CHARS:
            raise InvalidArgument(f"asset_id must be 1-{MAX_ASSET_ID_CHARS} characters")
        if not item.license_name.strip():
            raise InvalidArgument("license.name is required (policy restricts results by licence)")
        if len(item.image) > self.cfg.ingest_max_bytes:
            raise InvalidArgument(
                f"image is {len(item.image)} bytes, above the {self.cfg.ingest_max_bytes}-byte cap"
            )
        sha = hashlib.sha256(item.image).hexdigest()
        lock = self._id_locks.setdefault((tenant, item.asset_id), asyncio.Lock())
        try:
            async with lock:  # the same id twice in flight: the second sees the first's write
                return await self._ingest_locked(tenant, item, sha)
        finally:
            if not lock.locked() and self._id_locks.get((tenant, item.asset_id)) is lock:
                del self._id_locks[(tenant, item.asset_id)]

    async def _ingest_locked(self, tenant: str, item: IngestItem, sha: str) -> IngestAck:
        with self._stage("lookup"):
            existing = await self._batcher(self._lookup_batchers, tenant, self._lookup).submit(item.asset_id)
        now = dt.datetime.now(dt.UTC)
        if existing is not None and existing.asset.content_sha256 == sha:
            old = existing.asset
            if _same_metadata(old, item):
                return _ack(IngestOutcome.UNCHANGED, old)
            # Same bytes, new metadata: keep the stored vector and analysis, no re-encode.
            if existing.vector is None:
                raise FailedPrecondition(f"stored asset {item.asset_id!r} has no embedding; re-send it")
            asset = _asset(tenant, item, sha, old.width, old.height, created=old.created_at or now, now=now)
            asset.safety_labels, asset.safety_score, asset.ocr_text = (
                old.safety_labels,
                old.safety_score,
                old.ocr_text,
            )
            await self._store(tenant, asset, existing.vector, old.embedding_model)
            return _ack(IngestOutcome.UPDATED, asset)

        # New bytes. A concurrent item of this stream with the same bytes decides first.
        key = (tenant, sha)
        claim = self._sha_claims.get(key)
        if claim is not None:
            holder = await asyncio.shield(claim)
            if holder is not None and holder != item.asset_id:
                return IngestAck(
                    item.asset_id, IngestOutcome.DUPLICATE, content_sha256=sha, duplicate_of=holder
                )
        fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._sha_claims[key] = fut
        stored_as: str | None = None
        try:
            inspected = check_image(item.image, self.cfg.ingest_max_bytes, self.cfg.ingest_max_pixels)
            with self._stage("analyse+encode"):
                analysis, (encoded, model) = await asyncio.gather(
                    self._analyse(item.image), self._encode_batcher.submit(item.image)
                )
            if encoded.vector is None:
                raise _item_error(encoded.error_code, f"encoder rejected the image: {encoded.error_message}")
            vector = encoded.vector
            with self._stage("dedupe"):
                holder = await self._batcher(self._dup_batchers, tenant, self._find_duplicates).submit(
                    _DupProbe(item.asset_id, sha, vector, model)
                )
            if holder is not None:
                stored_as = holder
                return IngestAck(
                    item.asset_id, IngestOutcome.DUPLICATE, content_sha256=sha, duplicate_of=stored_as
                )
            created = existing.asset.created_at if existing is not None and existing.asset.created_at else now
            asset = _asset(tenant, item, sha, inspected.width, inspected.height, created=created, now=now)
            asset.safety_labels, asset.safety_score, asset.ocr_text = (
                analysis.safety_labels,
                analysis.safety_score,
                analysis.ocr_text,
            )
            asset.embedding_model = model
            with self._stage("store"):
                await self._store(tenant, asset, vector, model)
            stored_as = item.asset_id
            return _ack(IngestOutcome.UPDATED if existing is not None else IngestOutcome.CREATED, asset)
        finally:
            if not fut.done():
                fut.set_result(stored_as)
            if self._sha_claims.get(key) is fut:
                del self._sha_claims[key]

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Accumulate wall time per ingest stage (reported in the "ingest stream done" log line)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - start

    async def _analyse(self, image: bytes) -> Analysis:
        if not self.analyzer.enabled:
            return Analysis()
        rgb = await asyncio.to_thread(decode_rgb, image)
        return await self.analyzer.analyze(rgb)

    async def _store(self, tenant: str, asset: Asset, vector: Vector, model: ModelRef | None) -> None:
        outcome = await self._upserter(tenant).submit(_UpsertRecord(asset, vector, model))
        if outcome.error_code:
            raise _item_error(outcome.error_code, f"search service did not store it: {outcome.error_message}")


@dataclass(frozen=True)
class _DupProbe:
    asset_id: str
    sha: str
    vector: Vector
    model: ModelRef | None


class _ItemError(DomainError):
    def __init__(self, code_number: int, message: str) -> None:
        super().__init__(message)
        self.code = grpc.StatusCode.INTERNAL
        for c in grpc.StatusCode:
            if status_number(c) == code_number:
                self.code = c
                break


def _item_error(code_number: int, message: str) -> DomainError:
    return _ItemError(code_number or 13, message)


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
    )


def _result(r: Ranked, reasons: list[str]) -> SearchResult:
    return SearchResult(asset=r.hit.asset, scores=r.scores, rerank_notes=r.notes, policy_reasons=reasons)
