"""Search gRPC servicer: validation of wire shapes and proto <-> domain mapping only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import numpy as np
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from imagesearch.v1 import common_pb2, search_pb2, search_pb2_grpc

from services.common.errors import DomainError, InvalidArgument, status_number
from services.common.server import App, Probe
from services.search import filters as flt
from services.search.backends import make_backend
from services.search.cache import make_cache
from services.search.core import SearchCore, validate_tenant
from services.search.domain import AssetDoc, AssetRecord, Fusion, Hit, ItemFailure, ModelRef, SafetyLabel
from services.search.settings import SearchSettings

SERVICE_NAME = "imagesearch.v1.SearchService"
log = structlog.get_logger("search.server")

_OPS = {
    common_pb2.FILTER_OPERATOR_EQUAL: flt.Op.EQUAL,
    common_pb2.FILTER_OPERATOR_NOT_EQUAL: flt.Op.NOT_EQUAL,
    common_pb2.FILTER_OPERATOR_GREATER_THAN: flt.Op.GREATER_THAN,
    common_pb2.FILTER_OPERATOR_GREATER_THAN_OR_EQUAL: flt.Op.GREATER_THAN_OR_EQUAL,
    common_pb2.FILTER_OPERATOR_LESS_THAN: flt.Op.LESS_THAN,
    common_pb2.FILTER_OPERATOR_LESS_THAN_OR_EQUAL: flt.Op.LESS_THAN_OR_EQUAL,
    common_pb2.FILTER_OPERATOR_IN: flt.Op.IN,
    common_pb2.FILTER_OPERATOR_CONTAINS_ANY: flt.Op.CONTAINS_ANY,
    common_pb2.FILTER_OPERATOR_CONTAINS_ALL: flt.Op.CONTAINS_ALL,
    common_pb2.FILTER_OPERATOR_LIKE: flt.Op.LIKE,
    common_pb2.FILTER_OPERATOR_IS_NULL: flt.Op.IS_NULL,
}
_FUSIONS = {
    search_pb2.FUSION_TYPE_UNSPECIFIED: Fusion.RELATIVE_SCORE,
    search_pb2.FUSION_TYPE_RELATIVE_SCORE: Fusion.RELATIVE_SCORE,
    search_pb2.FUSION_TYPE_RANKED: Fusion.RANKED,
}
_MAX_FILTER_DEPTH = 32


# ---- proto -> domain ---------------------------------------------------------------------------------


def _ts(msg: common_pb2.Asset | common_pb2.License, field: str) -> datetime | None:
    if not msg.HasField(field):
        return None
    return getattr(msg, field).ToDatetime(tzinfo=UTC)


def _model(m: common_pb2.ModelRef) -> ModelRef | None:
    return ModelRef(m.name, m.version) if (m.name or m.version) else None


def decode_vector(e: common_pb2.Embedding, what: str) -> np.ndarray:
    if len(e.values) % 4:
        raise InvalidArgument(f"{what}.values has {len(e.values)} bytes, not a multiple of 4 (float32)")
    return np.frombuffer(e.values, dtype="<f4").astype(np.float32)


def record_from_proto(r: search_pb2.AssetRecord) -> tuple[AssetRecord, ItemFailure | None]:
    """The domain record, and the wire-level problem of this item if any (reported as its item error)."""
    a = r.asset
    doc = AssetDoc(
        asset_id=a.asset_id,
        uri=a.uri,
        caption=a.caption,
        tags=tuple(a.tags),
        ocr_text=a.ocr_text,
        owner=a.owner,
        license_name=a.license.name,
        license_expires_at=_ts(a.license, "expires_at"),
        safety_labels=tuple(SafetyLabel(s.label, float(s.score)) for s in a.safety_labels),
        safety_score=float(a.safety_score),
        source=a.source,
        created_at=_ts(a, "created_at"),
        updated_at=None,
        width=int(a.width),
        height=int(a.height),
        content_sha256=a.content_sha256,
        embedding_model=_model(r.image_embedding.model),
        popularity=float(a.popularity),
    )
    vector = None
    problem = None
    if r.HasField("image_embedding") and r.image_embedding.values:
        try:
            vector = decode_vector(r.image_embedding, "image_embedding")
        except InvalidArgument as exc:
            problem = ItemFailure(status_number(exc.code), exc.message)
    return AssetRecord(doc, vector), problem


def _typed(v: common_pb2.Value) -> flt.TypedValue:
    kind = v.WhichOneof("kind") or ""
    if kind == "timestamp_value":
        return flt.TypedValue(kind, v.timestamp_value.ToDatetime(tzinfo=UTC))
    return flt.TypedValue(kind, getattr(v, kind) if kind else "")


def filter_from_proto(f: common_pb2.Filter, depth: int = 0) -> flt.FilterNode:
    if depth > _MAX_FILTER_DEPTH:
        raise InvalidArgument(f"the filter nests deeper than {_MAX_FILTER_DEPTH} levels")
    which = f.WhichOneof("expr")
    if which == "condition":
        c = f.condition
        operand = c.WhichOneof("operand")
        value = _typed(c.value) if operand == "value" else None
        values = [_typed(v) for v in c.values.values] if operand == "values" else None
        return flt.condition(c.field, _OPS.get(c.operator), value, values)
    if which == "all_of":
        return flt.all_of([filter_from_proto(x, depth + 1) for x in f.all_of.filters])
    if which == "any_of":
        return flt.any_of([filter_from_proto(x, depth + 1) for x in f.any_of.filters])
    if which == "negate":
        return flt.negate(filter_from_proto(f.negate, depth + 1))
    raise InvalidArgument("a filter node has none of condition, all_of, any_of, negate set")


# ---- domain -> proto ---------------------------------------------------------------------------------


def _pb_ts(dt: datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(dt)
    return t


def asset_to_proto(doc: AssetDoc, tenant: str) -> common_pb2.Asset:
    a = common_pb2.Asset(
        asset_id=doc.asset_id,
        tenant=tenant,
        uri=doc.uri,
        caption=doc.caption,
        tags=list(doc.tags),
        ocr_text=doc.ocr_text,
        owner=doc.owner,
        safety_labels=[common_pb2.SafetyLabel(label=s.label, score=s.score) for s in doc.safety_labels],
        safety_score=doc.safety_score,
        source=doc.source,
        width=doc.width,
        height=doc.height,
        content_sha256=doc.content_sha256,
        popularity=doc.popularity,
    )
    if doc.license_name or doc.license_expires_at:
        a.license.name = doc.license_name
        if doc.license_expires_at:
            a.license.expires_at.CopyFrom(_pb_ts(doc.license_expires_at))
    if doc.created_at:
        a.created_at.CopyFrom(_pb_ts(doc.created_at))
    if doc.updated_at:
        a.updated_at.CopyFrom(_pb_ts(doc.updated_at))
    if doc.embedding_model:
        a.embedding_model.name = doc.embedding_model.name
        a.embedding_model.version = doc.embedding_model.version
    return a


def _embedding(vec: np.ndarray, model: ModelRef | None) -> common_pb2.Embedding:
    e = common_pb2.Embedding(values=vec.astype("<f4").tobytes())
    if model:
        e.model.name, e.model.version = model.name, model.version
    return e


def hit_to_proto(h: Hit, tenant: str) -> search_pb2.QueryHit:
    s = h.scores
    out = search_pb2.QueryHit(
        asset=asset_to_proto(h.doc, tenant),
        scores=search_pb2.ScoreBreakdown(
            fused=s.fused,
            keyword_contribution=s.keyword_contribution,
            vector_contribution=s.vector_contribution,
            bm25=s.bm25,
            cosine_similarity=s.cosine_similarity,
        ),
    )
    if h.vector is not None:
        out.image_embedding.CopyFrom(_embedding(h.vector, h.doc.embedding_model))
    return out


def _item_error(code: int, message: str) -> common_pb2.ItemError:
    return common_pb2.ItemError(code=code, message=message)


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, core: SearchCore) -> None:
        self.core = core

    async def UpsertAssets(
        self, request: search_pb2.UpsertAssetsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.UpsertAssetsResponse:
        decoded = [record_from_proto(r) for r in request.assets]
        summary = await self.core.upsert(request.tenant, [d[0] for d in decoded], [d[1] for d in decoded])
        results = []
        for o in summary.outcomes:
            res = search_pb2.UpsertResult(asset_id=o.asset_id)
            if o.error is not None:
                res.error.CopyFrom(_item_error(o.error.code, o.error.message))
            results.append(res)
        return search_pb2.UpsertAssetsResponse(results=results, index_generation=summary.generation)

    async def StreamUpsertAssets(
        self,
        request_iterator: AsyncIterator[search_pb2.StreamUpsertAssetsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[search_pb2.StreamUpsertAssetsResponse]:
        """Micro-batches whatever has arrived (up to max_batch) into one write; one answer per item,
        in arrival order, each sent after its batch was stored."""
        queue: asyncio.Queue[search_pb2.StreamUpsertAssetsRequest | None] = asyncio.Queue(
            maxsize=2 * self.core.settings.max_batch
        )

        async def read() -> None:
            try:
                async for item in request_iterator:
                    await queue.put(item)
            finally:
                await queue.put(None)

        reader = asyncio.create_task(read())
        try:
            done = False
            while not done:
                first = await queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self.core.settings.max_batch and not queue.empty():
                    nxt = queue.get_nowait()
                    if nxt is None:
                        done = True
                        break
                    batch.append(nxt)
                for result in await self._stream_batch(batch):
                    yield search_pb2.StreamUpsertAssetsResponse(result=result)
        finally:
            reader.cancel()

    async def _stream_batch(
        self, batch: list[search_pb2.StreamUpsertAssetsRequest]
    ) -> list[search_pb2.UpsertResult]:
        results: list[search_pb2.UpsertResult | None] = [None] * len(batch)
        by_tenant: dict[str, list[int]] = {}
        for i, item in enumerate(batch):
            try:
                validate_tenant(item.tenant)
            except InvalidArgument as exc:
                results[i] = search_pb2.UpsertResult(
                    asset_id=item.asset.asset.asset_id,
                    error=_item_error(status_number(exc.code), exc.message),
                )
                continue
            by_tenant.setdefault(item.tenant, []).append(i)
        for tenant, idx in by_tenant.items():
            try:
                decoded = [record_from_proto(batch[i].asset) for i in idx]
                summary = await self.core.upsert(tenant, [d[0] for d in decoded], [d[1] for d in decoded])
                for i, o in zip(idx, summary.outcomes, strict=True):
                    res = search_pb2.UpsertResult(asset_id=o.asset_id)
                    if o.error is not None:
                        res.error.CopyFrom(_item_error(o.error.code, o.error.message))
                    results[i] = res
            except DomainError as exc:  # e.g. the store is unavailable: every item of this batch failed
                for i in idx:
                    results[i] = search_pb2.UpsertResult(
                        asset_id=batch[i].asset.asset.asset_id,
                        error=_item_error(status_number(exc.code), exc.message),
                    )
        return [r for r in results if r is not None]

    async def DeleteAssets(
        self, request: search_pb2.DeleteAssetsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.DeleteAssetsResponse:
        deleted, gen = await self.core.delete(request.tenant, list(request.asset_ids))
        return search_pb2.DeleteAssetsResponse(
            results=[
                search_pb2.DeleteResult(asset_id=a, deleted=d)
                for a, d in zip(request.asset_ids, deleted, strict=True)
            ],
            index_generation=gen,
        )

    async def GetAssets(
        self, request: search_pb2.GetAssetsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetAssetsResponse:
        found = await self.core.get(request.tenant, list(request.asset_ids), request.include_vectors)
        out = search_pb2.GetAssetsResponse()
        for aid, rec in zip(request.asset_ids, found, strict=True):
            if rec is None:
                out.missing_asset_ids.append(aid)
                continue
            r = out.assets.add()
            r.asset.CopyFrom(asset_to_proto(rec.doc, request.tenant))
            if rec.vector is not None:
                r.image_embedding.CopyFrom(_embedding(rec.vector, rec.doc.embedding_model))
        return out

    async def FindByContentHash(
        self, request: search_pb2.FindByContentHashRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.FindByContentHashResponse:
        matches = await self.core.find_by_content_hash(request.tenant, list(request.content_sha256))
        return search_pb2.FindByContentHashResponse(
            matches=[
                search_pb2.ContentHashMatch(content_sha256=m.content_sha256, asset_ids=list(m.asset_ids))
                for m in matches
            ]
        )

    async def Query(
        self, request: search_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.QueryResponse:
        validate_tenant(request.tenant)
        vector = None
        vector_model = None
        if request.HasField("vector") and (request.vector.values or request.vector.model.name):
            vector = decode_vector(request.vector, "vector")
            vector_model = _model(request.vector.model)
        fusion = _FUSIONS.get(request.fusion)
        if fusion is None:
            raise InvalidArgument(f"unknown fusion type {request.fusion}")
        plan = await self.core.plan(
            text=request.text,
            vector=vector,
            vector_model=vector_model,
            alpha=request.alpha if request.HasField("alpha") else None,
            fusion=fusion,
            filter=filter_from_proto(request.filter) if request.HasField("filter") else None,
            limit=request.limit,
            offset=request.offset,
            window=request.candidate_window,
            keyword_fields=[(k.name, k.boost) for k in request.keyword_fields],
            include_vectors=request.include_vectors,
        )
        result = await self.core.query(request.tenant, plan, skip_cache=request.skip_cache)
        return search_pb2.QueryResponse(
            hits=[hit_to_proto(h, request.tenant) for h in result.hits],
            cached=result.cached,
            index_generation=result.generation,
        )

    async def GetStats(
        self, request: search_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetStatsResponse:
        stats, gen = await self.core.stats(request.tenant)
        out = search_pb2.GetStatsResponse(
            asset_count=stats.asset_count,
            index_generation=gen,
            backend=self.core.backend.name,
            dimension=stats.dimension,
            cache=self.core.cache.name,
        )
        if stats.model is not None:
            out.model.name, out.model.version = stats.model.name, stats.model.version
        return out

    async def GetIndexGeneration(
        self, request: search_pb2.GetIndexGenerationRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetIndexGenerationResponse:
        gen = await self.core.index_generation(request.tenant)
        return search_pb2.GetIndexGenerationResponse(index_generation=gen or 0, consistent=gen is not None)


async def build(settings: SearchSettings) -> App:
    backend = make_backend(settings)
    await backend.start()
    cache = make_cache(settings)
    core = SearchCore(settings, backend, cache)
    probes = [Probe(backend.name, backend.ready, required=True)]
    if cache.name == "redis":
        probes.append(Probe("redis", cache.healthy, required=False))

    async def on_stop() -> None:
        await cache.close()
        await backend.close()

    return App(
        name="search",
        services=[(search_pb2_grpc.add_SearchServiceServicer_to_server, SearchServicer(core), SERVICE_NAME)],
        probes=probes,
        on_stop=on_stop,
    )
