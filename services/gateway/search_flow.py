"""The search flow: Search and SearchSimilar, from a validated query to one page of results.

authorise -> visibility (policy filters) -> page token -> page cache -> encode the query (text and/or
image; cached) -> first stage (hybrid query with the policy filters ANDed in, a candidate window with
stored vectors) -> policy re-check of every hit -> rerank -> one page.
Encoder trouble on a text query degrades to keyword-only (alpha 0) with `degraded_reasons`.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from cachetools import LRUCache
from prometheus_client import Counter

from services.common.errors import DomainError, FailedPrecondition, InvalidArgument, Unavailable
from services.gateway import paging
from services.gateway.analysis import check_size
from services.gateway.auth import Principal
from services.gateway.backends.base import EncoderClient, SearchClient
from services.gateway.backends.errors import BackendDeadlineExceeded, BackendUnavailable, public_message
from services.gateway.domain import (
    PRIMARY_VECTOR,
    VISUAL_VECTOR,
    Condition,
    Filter,
    Hit,
    ModelRef,
    ModelVectors,
    Not,
    Op,
    QuerySpec,
    RerankOptions,
    SearchPage,
    SearchQuery,
    SearchResult,
    StageScores,
    StoredAsset,
    Vector,
    all_of,
    canonical,
    count_nodes,
)
from services.gateway.drift import DriftMonitor
from services.gateway.fusion_defaults import FusionChooser, FusionDefaults, read_package_defaults
from services.gateway.limits import (
    MAX_ASSET_ID_CHARS,
    MAX_FILTER_NODES,
    MAX_FIRST_STAGE_DEPTH,
    MAX_LIST_VALUES,
    MAX_QUERY_LIMIT,
)
from services.gateway.model_versions import ModelVersions
from services.gateway.page_cache import PageCache, PageRequest
from services.gateway.policy import Policy, Visibility
from services.gateway.preferences import NO_PREFERENCES, CallerPreferences, personal_key
from services.gateway.query_vectors import QueryVectors
from services.gateway.reads import Reads
from services.gateway.rerank import Ranked, RerankConfig, rerank
from services.gateway.settings import GatewaySettings
from services.gateway.shadow import Shadow

log = structlog.get_logger("search")

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
MAX_TEXT_CHARS = 1000
REPO_ROOT = Path(__file__).resolve().parents[2]

DEGRADED_SEARCHES = Counter(
    "gateway_degraded_searches_total",
    "Searches answered in a degraded mode (encoder unavailable: keyword-only results).",
)


@dataclass(frozen=True)
class SearchConfig:
    fusion: FusionChooser  # alpha and fusion: the caller's, else the package's, else the settings'
    rerank: RerankConfig  # the defaults a request's RerankOptions override
    candidate_window: int
    page_cache_entries: int
    page_cache_ttl_s: float
    query_vector_entries: int
    query_vector_ttl_s: float
    max_image_bytes: int  # an example image is held to the ingest caps
    max_image_pixels: int
    max_tenants: int
    plan_entries: int = 0  # validated text searches remembered (_Plan); 0: off

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> SearchConfig:
        models_dir = Path(s.model_packages_dir) if s.model_packages_dir else REPO_ROOT / "models"
        return cls(
            fusion=FusionChooser(
                FusionDefaults(s.default_alpha, s.default_fusion, "settings"),
                read_package_defaults(models_dir),
            ),
            rerank=RerankConfig(
                text_weight=s.rerank_text_weight,
                mmr_lambda=s.rerank_mmr_lambda,
                duplicate_threshold=s.rerank_duplicate_threshold,
                freshness_weight=s.rerank_freshness_weight,
                popularity_weight=s.rerank_popularity_weight,
                freshness_half_life_days=s.rerank_freshness_half_life_days,
            ),
            candidate_window=s.rerank_candidate_window,
            page_cache_entries=s.page_cache_entries,
            page_cache_ttl_s=s.page_cache_ttl_s,
            query_vector_entries=s.query_vector_cache_entries,
            query_vector_ttl_s=s.query_vector_ttl_s,
            max_image_bytes=s.ingest_max_bytes,
            max_image_pixels=s.ingest_max_pixels,
            max_tenants=s.max_tenants_tracked,
            plan_entries=s.search_plan_entries,
        )


@dataclass(frozen=True)
class _Plan:
    """What validating a text search gave: everything about it that depends only on the principal and
    the query, so an identical search (same principal, same query) reuses it. The principal is part of
    the key by value: a key whose roles, licences or threshold changed is another principal, and a
    revoked key never gets here (authentication runs on every call)."""

    page_size: int
    cfg: RerankConfig
    window: int
    bound: str
    visibility: tuple[Any, ...]  # the Visibility.cache_key() the bound was made under


@dataclass
class _QueryVectors:
    """What encoding a search's text and image gave: vectors, model, and why it degraded (if so)."""

    text: Vector | None = None
    image: Vector | None = None
    model: ModelRef | None = None
    degraded: tuple[str, ...] = ()
    # The image's "visual" vector, when the model has one.
    image_visual: Vector | None = None


def _unit(v: Vector) -> Vector:
    n = float(np.linalg.norm(v))
    return (v / n).astype(np.float32) if n > 0 else v


def _degrading(exc: BaseException) -> bool:
    """Encoder failures that degrade a text search to keyword-only instead of failing it."""
    return isinstance(exc, BackendUnavailable | BackendDeadlineExceeded)


def _check_filter_size(f: Filter | None) -> None:
    """The filter sent (the caller's, which convert held to the cap, plus the policy's own conditions)
    must fit the search service's node cap."""
    n = count_nodes(f)
    if n > MAX_FILTER_NODES:
        raise InvalidArgument(
            f"the filter has {n} nodes with the policy's own conditions added; at most "
            f"{MAX_FILTER_NODES} fit: simplify it"
        )


def _page_size(n: int) -> int:
    if n == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= n <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be 1-{MAX_PAGE_SIZE}, got {n}")
    return n


class SearchFlow:
    def __init__(
        self,
        encoder: EncoderClient,
        search: SearchClient,
        reads: Reads,
        policy: Policy,
        page_tokens: paging.PageTokens,
        config: SearchConfig,
        drift: DriftMonitor | None = None,
        preferences: CallerPreferences | None = None,
        models: ModelVersions | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        self.cfg = config
        self.shadow = shadow
        self.models = models  # which encoder serves the tenant's active model version
        self._model_vectors: dict[ModelRef, QueryVectors] = {}
        self.drift = drift
        self.preferences = preferences  # None: the preference boost is off
        self.reads = reads
        self.policy = policy
        self.tokens = page_tokens
        self.vectors = QueryVectors(
            encoder,
            config.query_vector_entries,
            config.query_vector_ttl_s,
            config.max_image_bytes,
            config.max_image_pixels,
        )
        self.pages = PageCache(
            config.page_cache_entries,
            config.page_cache_ttl_s,
            search,
            policy,
            config.max_tenants,
        )
        self._plans: LRUCache[tuple[Principal, SearchQuery], _Plan] | None = (
            LRUCache(config.plan_entries) if config.plan_entries > 0 else None
        )

    async def search(self, principal: Principal, q: SearchQuery) -> SearchPage:
        action = "search"
        self.policy.authorize(principal, action)
        # An example image keeps a search out of the memo (its bytes would be part of the key).
        key = (principal, q) if self._plans is not None and not q.image else None
        plan = self._plans.get(key) if key is not None and self._plans is not None else None
        if plan is None:
            self._validate_search(q)
            page_size = _page_size(q.page_size)
        # Every call: licences and unsafe content are allowed (or denied, audited) per request.
        vis = self.policy.visibility(
            principal, action, requested_licenses=q.licenses, include_unsafe=q.include_unsafe
        )
        if plan is not None and plan.visibility != vis.cache_key():
            # Defence in depth: the visibility is meant to follow from the key, but should a policy
            # change it, the page binding (and so the page cache key) is made again.
            page_size, plan = plan.page_size, None
        first_stage_filter: Filter | None = None
        if plan is None:
            first_stage_filter = all_of(q.filter, vis.filter(self.policy.granularity_s))
            _check_filter_size(first_stage_filter)
            cfg, window = self._rerank_config(q.rerank, 1.0)  # validated before any call
            bound = paging.binding(
                "search",
                vis.cache_key(),
                q.text,
                hashlib.sha256(q.image).hexdigest() if q.image else "",
                canonical(q.filter),
                q.alpha,
                q.fusion or "",
                q.rerank,
                page_size,
                str(q.model or ""),
            )
            if key is not None and self._plans is not None:
                self._plans[key] = _Plan(page_size, cfg, window, bound, vis.cache_key())
        else:
            page_size, cfg, window, bound = plan.page_size, plan.cfg, plan.window, plan.bound
        text = q.text.strip()
        preferred = await self._preferred(principal, q.rerank)
        model = await self._query_model(principal.tenant, q.model)
        ask = self._page_request(principal, action, vis, bound, q, page_size, preferred, model)
        cached, generation = await self.pages.lookup(ask)
        if cached is not None:
            return cached
        cfg = self._personalised(cfg, preferred)
        if first_stage_filter is None:  # a remembered plan: the filter holds this call's `now`
            first_stage_filter = all_of(q.filter, vis.filter(self.policy.granularity_s))

        source = self._query_vectors(model)
        vectors = await self._encode_query(text, q.image, source)
        query_vec: Vector | None
        vector_name = PRIMARY_VECTOR
        image_vec = vectors.image
        if vectors.text is not None and vectors.image is not None:
            # Text + image: one "semantic" vector (only it is shared by both towers). The rerank's
            # image_cosine stays on "semantic" too: it reads the candidates' vectors the first stage
            # returned, and the "visual" ones would cost a second read of the whole window.
            query_vec = _unit(cfg.text_weight * vectors.text + (1 - cfg.text_weight) * vectors.image)
        elif vectors.image is not None and vectors.image_visual is not None:
            # Image only: the "visual" vector finds look-alikes better than the semantic one.
            query_vec = image_vec = vectors.image_visual
            vector_name = VISUAL_VECTOR
        else:
            query_vec = vectors.text if vectors.text is not None else vectors.image
        # The package's calibrated defaults need the model, known once the query is encoded.
        alpha, fusion = self.cfg.fusion.choose(q.alpha, q.fusion, vectors.model)
        if query_vec is None:
            first_alpha = 0.0
        else:
            first_alpha = alpha if text else 1.0
        cfg = replace(cfg, alpha=first_alpha)
        spec = QuerySpec(
            tenant=principal.tenant,
            text=text,
            vector=query_vec,
            model=vectors.model,
            alpha=first_alpha,
            fusion=fusion,
            filter=first_stage_filter,
            vector_name=vector_name,
        )
        page = await self._page(ask, spec, cfg, window, text_vec=vectors.text, image_vec=image_vec)
        page.degraded_reasons = list(vectors.degraded)
        page.model = vectors.model
        if self.shadow is not None and not ask.offset:  # compared in the background, never returned
            self.shadow.sample(spec, text, q.image)
        if page.degraded_reasons:
            DEGRADED_SEARCHES.inc()
        if query_vec is not None and vector_name == PRIMARY_VECTOR and not ask.offset:
            # The best cosine means something only when the vector leg ran.
            best = page.best_cosine if first_alpha else None
            self._observe_drift(principal.tenant, vectors.model, query_vec, best)
        self.pages.keep(ask, generation, page, source=None)
        return page

    async def search_similar(self, principal: Principal, q: SearchQuery) -> SearchPage:
        action = "search_similar"
        self.policy.authorize(principal, action, target=q.similar_to)
        if not 1 <= len(q.similar_to) <= MAX_ASSET_ID_CHARS:
            raise InvalidArgument(f"asset_id must be 1-{MAX_ASSET_ID_CHARS} characters")
        page_size = _page_size(q.page_size)
        vis = self.policy.visibility(principal, action, include_unsafe=q.include_unsafe)
        first_stage_filter = all_of(
            q.filter,
            vis.filter(self.policy.granularity_s),
            Not(Condition("asset_id", Op.EQUAL, q.similar_to)),
        )
        _check_filter_size(first_stage_filter)
        self._rerank_config(q.rerank, 1.0)  # the options are validated before any call
        bound = paging.binding(
            "similar",
            vis.cache_key(),
            q.similar_to,
            canonical(q.filter),
            q.alpha,
            q.fusion or "",
            q.rerank,
            page_size,
        )
        preferred = await self._preferred(principal, q.rerank)
        active = await self.models.active(principal.tenant) if self.models is not None else None
        ask = self._page_request(principal, action, vis, bound, q, page_size, preferred, active)
        cached, generation = await self.pages.lookup(ask)
        if cached is not None:
            return cached
        source = await self.reads.visible_asset(principal, action, vis, q.similar_to, include_vector=True)
        if source.vector is None:
            raise FailedPrecondition(f"asset {q.similar_to!r} has no stored embedding to compare with")
        model, source_vectors = self._similar_vectors(active, source)
        # More like this compares images: on the "visual" vector when the asset has one.
        visual = source_vectors.named.get(VISUAL_VECTOR)
        source_vec, vector_name = (
            (visual, VISUAL_VECTOR) if visual is not None else (source_vectors.vector, PRIMARY_VECTOR)
        )
        caption = source.asset.caption.strip()[:MAX_TEXT_CHARS]
        # No request field sets alpha or fusion here; an experiment arm may (experiments.Arm.apply).
        alpha, fusion = self.cfg.fusion.choose(q.alpha, q.fusion, model)
        alpha = alpha if caption else 1.0
        cfg, window = self._rerank_config(q.rerank, alpha)
        cfg = self._personalised(cfg, preferred)
        spec = QuerySpec(
            tenant=principal.tenant,
            text=caption,
            vector=source_vec,
            model=model,
            alpha=alpha,
            fusion=fusion,
            filter=first_stage_filter,
            vector_name=vector_name,
        )
        page = await self._page(
            ask, spec, cfg, window, text_vec=None, image_vec=source_vec, exclude=q.similar_to
        )
        page.model = model
        self.pages.keep(ask, generation, page, source=source.asset)
        return page

    # ------------------------------------------------------------------------------------------
    # Steps

    def _validate_search(self, q: SearchQuery) -> None:
        """The checks of a search's own fields (INVALID_ARGUMENT), before any policy or backend."""
        if not q.text.strip() and not q.image:
            raise InvalidArgument("give a query text, an example image, or both")
        if len(q.text) > MAX_TEXT_CHARS:
            raise InvalidArgument(f"query text is {len(q.text)} characters; the limit is {MAX_TEXT_CHARS}")
        if q.alpha is not None and not 0.0 <= q.alpha <= 1.0:
            raise InvalidArgument(f"alpha must be in [0, 1], got {q.alpha}")
        if len(q.licenses) > MAX_LIST_VALUES:  # they become an IN list of the first-stage filter
            raise InvalidArgument(f"licenses takes at most {MAX_LIST_VALUES} names, got {len(q.licenses)}")
        if q.image:
            check_size(q.image, self.cfg.max_image_bytes)  # before it is hashed or decoded

    def _observe_drift(self, tenant: str, model: ModelRef | None, vector: Vector, best: float | None) -> None:
        """Count an embedded query in the drift statistics. First pages only (a query paged through is
        one query); visual-vector (image-only) searches live in another space than the primary
        centroid and are not counted."""
        if self.drift is not None:
            self.drift.observe_query(tenant, model, vector, best)

    def _page_request(
        self,
        principal: Principal,
        action: str,
        vis: Visibility,
        bound: str,
        q: SearchQuery,
        page_size: int,
        preferred: frozenset[str],
        model: ModelRef | None,
    ) -> PageRequest:
        """The page asked for; its token must verify against `bound` (INVALID_ARGUMENT otherwise).
        `model` is the version whose vectors the page compares: a page of the old active version is
        not served once this gateway knows of an activation (the token stays valid across it)."""
        offset = self.tokens.offset(q.page_token, bound)
        return PageRequest(
            principal,
            action,
            vis,
            bound,
            offset,
            page_size,
            q.rerank.disable,
            personal_key(preferred),
            f"{model.name}:{model.version}" if model is not None else "",
        )

    async def _preferred(self, principal: Principal, opts: RerankOptions) -> frozenset[str]:
        """The caller's recently clicked assets when the preference boost is on (the boost is a rerank
        step: a search without the rerank is not personalised)."""
        if self.preferences is None or opts.disable:
            return NO_PREFERENCES
        return await self.preferences.clicked(principal)

    def _personalised(self, cfg: RerankConfig, preferred: frozenset[str]) -> RerankConfig:
        if self.preferences is None or not preferred:
            return cfg
        return replace(cfg, preference_weight=self.preferences.weight, preferred=preferred)

    async def _query_model(self, tenant: str, wanted: ModelRef | None) -> ModelRef | None:
        """The version whose encoder encodes the tenant's query: its active one, or `wanted` (a
        canary arm's) when the tenant holds it (None: the default encoder's)."""
        return await self.models.query_model(tenant, wanted) if self.models is not None else None

    def _query_vectors(self, model: ModelRef | None) -> QueryVectors:
        """The query-vector source (its encoder, its caches) of `model`."""
        if model is None or self.models is None:
            return self.vectors
        qv = self._model_vectors.get(model)
        encoder = self.models.encoder_of(model)
        if qv is None and encoder is not None:
            c = self.cfg
            qv = QueryVectors(
                encoder, c.query_vector_entries, c.query_vector_ttl_s, c.max_image_bytes, c.max_image_pixels
            )
            self._model_vectors[model] = qv
        return qv or self.vectors

    async def _encode_query(
        self, text: str, image: bytes, source: QueryVectors | None = None
    ) -> _QueryVectors:
        """Encode the text and the image concurrently. The encoder being down or slow degrades a
        query with text to keyword-only (both vectors dropped: a half-encoded text + image query
        would silently change meaning); an image-only query fails."""
        kinds: list[str] = []
        coros: list[Any] = []
        if text:
            kinds.append("text")
            coros.append((source or self.vectors).text(text))
        if image:
            kinds.append("image")
            coros.append((source or self.vectors).image(image))
        out = _QueryVectors()
        degraded: list[str] = []
        outcomes = await asyncio.gather(*coros, return_exceptions=True)
        for kind, outcome in zip(kinds, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, DomainError) or not _degrading(outcome):
                    raise outcome
                if not text:
                    log.warning("encoder unavailable for an image query", detail=outcome.message)
                    raise Unavailable(
                        f"image search needs the encoder, which is unavailable ({public_message(outcome)}); "
                        "text queries still work (keyword-only)"
                    ) from None
                log.warning("encoder unavailable; keyword-only", detail=outcome.message)
                degraded.append("encoder unavailable: keyword-only results")
                if kind == "image":
                    degraded.append("the example image was ignored")
            elif kind == "text":
                out.text, out.model = outcome
            else:
                out.image, out.model, named = outcome
                out.image_visual = named.get(VISUAL_VECTOR)
        if degraded:
            return _QueryVectors(model=out.model, degraded=tuple(degraded))
        return out

    def _rerank_config(self, opts: RerankOptions, alpha: float) -> tuple[RerankConfig, int]:
        """The configured rerank defaults with the request's overrides (validated), and its window."""
        base = self.cfg.rerank

        def pick(name: str, value: float | None, default: float) -> float:
            if value is None:
                return default
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"rerank.{name} must be in [0, 1], got {value}")
            return float(value)

        window = self.cfg.candidate_window if opts.candidate_window is None else opts.candidate_window
        if not 1 <= window <= MAX_QUERY_LIMIT:  # the window is one first-stage query's limit
            raise InvalidArgument(f"rerank.candidate_window must be 1-{MAX_QUERY_LIMIT}, got {window}")
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

    def _similar_vectors(
        self, active: ModelRef | None, source: StoredAsset
    ) -> tuple[ModelRef | None, ModelVectors]:
        """The source asset's vectors to compare with: the tenant's `active` version's when the asset
        holds them (after a re-index and activation), else its first model's."""
        assert source.vector is not None
        first = ModelVectors(source.vector, source.named)
        if active is not None and active in source.others:
            return active, source.others[active]
        return source.asset.embedding_model, first

    async def _page(
        self,
        ask: PageRequest,
        spec: QuerySpec,
        cfg: RerankConfig,
        window: int,
        *,
        text_vec: Vector | None,
        image_vec: Vector | None,
        exclude: str = "",
    ) -> SearchPage:
        if ask.disable_rerank:
            return await self._first_stage_page(ask, spec, exclude)
        return await self._reranked_page(ask, spec, cfg, window, text_vec, image_vec, exclude)

    async def _first_stage_page(self, ask: PageRequest, spec: QuerySpec, exclude: str) -> SearchPage:
        """First-stage order: page straight through the search service (one extra hit says whether
        another page exists)."""
        offset, page_size = ask.offset, ask.page_size
        if offset + page_size > MAX_FIRST_STAGE_DEPTH:
            raise InvalidArgument(f"cannot page beyond {MAX_FIRST_STAGE_DEPTH} results; refine the query")
        result = await self.reads.query(replace(spec, limit=page_size + 1, offset=offset))
        hits = [h for h in result.hits if h.asset.asset_id != exclude]
        more = len(hits) > page_size
        hits = hits[:page_size]
        admitted = self.policy.screen(ask.principal, ask.action, ask.vis, [h.asset for h in hits])
        results = [
            _first_stage_result(hits[i], offset + i + 1, self._reasons(ask, hits[i])) for i in admitted
        ]
        _name_vector(results, spec)
        token = self.tokens.issue(ask.bound, offset + page_size) if more else ""
        return SearchPage(results, token, cached=result.cached, best_cosine=_best_cosine(result.hits))

    async def _reranked_page(
        self,
        ask: PageRequest,
        spec: QuerySpec,
        cfg: RerankConfig,
        window: int,
        text_vec: Vector | None,
        image_vec: Vector | None,
        exclude: str,
    ) -> SearchPage:
        """Rerank a candidate window (with stored vectors) and cut the page out of it."""
        offset, page_size = ask.offset, ask.page_size
        if offset >= window:
            return SearchPage([], "")
        result = await self.reads.query(
            replace(spec, limit=window, offset=0, candidate_window=max(window, 100), include_vectors=True)
        )
        hits = [h for h in result.hits if h.asset.asset_id != exclude]
        admitted = self.policy.screen(ask.principal, ask.action, ask.vis, [h.asset for h in hits])
        ranked, _trace = rerank(
            [hits[i] for i in admitted],
            cfg,
            text_vector=text_vec,
            image_vector=image_vec,
            now=ask.vis.now,
            top_k=offset + page_size + 1,
        )
        results = [
            _reranked_result(r, self._reasons(ask, r.hit)) for r in ranked[offset : offset + page_size]
        ]
        _name_vector(results, spec)
        more = offset + page_size < len(ranked)
        token = self.tokens.issue(ask.bound, offset + page_size) if more else ""
        return SearchPage(results, token, cached=result.cached, best_cosine=_best_cosine(result.hits))

    def _reasons(self, ask: PageRequest, hit: Hit) -> list[str]:
        return self.policy.reasons(ask.vis, hit.asset)


def _best_cosine(hits: list[Hit]) -> float:
    """The nearest first-stage hit's raw cosine (0 when the first stage found nothing)."""
    return max((h.scores.cosine for h in hits), default=0.0)


def _name_vector(results: list[SearchResult], spec: QuerySpec) -> None:
    """StageScores.vector_name: the named vector the first stage's vector leg searched, if it ran."""
    if spec.vector is not None and spec.alpha != 0.0:
        for r in results:
            r.scores.vector_name = spec.vector_name or PRIMARY_VECTOR


def _first_stage_result(hit: Hit, rank: int, reasons: list[str]) -> SearchResult:
    s = hit.scores
    asset, message = hit.page_asset()
    return SearchResult(
        asset=asset,
        scores=StageScores(
            keyword=s.keyword, vector=s.vector, fused=s.fused, final=s.fused, first_stage_rank=rank
        ),
        policy_reasons=reasons,
        asset_message=message,
    )


def _reranked_result(r: Ranked, reasons: list[str]) -> SearchResult:
    asset, message = r.hit.page_asset()
    return SearchResult(
        asset=asset, scores=r.scores, rerank_notes=r.notes, policy_reasons=reasons, asset_message=message
    )
