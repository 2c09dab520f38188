"""Search gRPC servicer and wiring: each RPC converts its request (convert.py), calls the core, and
converts the answer back; `build` wires settings, backend, cache and core into the served app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from imagesearch.v1 import search_pb2, search_pb2_grpc

from services.common.server import App, Probe
from services.search import convert
from services.search.backends import make_backend, weaviate_api_key
from services.search.backends.weaviate.repair import VectorIndexRepairer
from services.search.cache import make_cache
from services.search.core import SearchCore, validate_tenant
from services.search.domain import StreamedUpsert
from services.search.settings import SearchSettings

SERVICE_NAME = "imagesearch.v1.SearchService"


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    def __init__(self, core: SearchCore) -> None:
        self.core = core

    async def UpsertAssets(
        self, request: search_pb2.UpsertAssetsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.UpsertAssetsResponse:
        decoded = [convert.record_from_proto(r) for r in request.assets]
        summary = await self.core.upsert(
            request.tenant,
            [d[0] for d in decoded],
            [d[1] for d in decoded],
            vectors_only=request.vectors_only,
        )
        return search_pb2.UpsertAssetsResponse(
            results=[convert.upsert_result(o) for o in summary.outcomes], index_generation=summary.generation
        )

    async def StreamUpsertAssets(
        self,
        request_iterator: AsyncIterator[search_pb2.StreamUpsertAssetsRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[search_pb2.StreamUpsertAssetsResponse]:
        async def items() -> AsyncIterator[StreamedUpsert]:
            async for request in request_iterator:
                yield convert.streamed_from_proto(request)

        async for outcome in self.core.upsert_stream(items()):
            yield search_pb2.StreamUpsertAssetsResponse(result=convert.upsert_result(outcome))

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
        found = await self.core.get(
            request.tenant, list(request.asset_ids), request.include_vectors, request.include_unanalysed
        )
        return search_pb2.GetAssetsResponse(
            assets=[convert.asset_record_to_proto(r, request.tenant) for r in found if r is not None],
            missing_asset_ids=[a for a, r in zip(request.asset_ids, found, strict=True) if r is None],
        )

    async def ListPendingAnalysis(
        self, request: search_pb2.ListPendingAnalysisRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ListPendingAnalysisResponse:
        found = await self.core.pending_analysis(request.tenant, request.limit)
        return convert.pending_to_proto(found)

    async def FindByContentHash(
        self, request: search_pb2.FindByContentHashRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.FindByContentHashResponse:
        matches = await self.core.find_by_content_hash(request.tenant, list(request.content_sha256))
        return convert.content_hash_matches_to_proto(matches)

    async def Query(
        self, request: search_pb2.QueryRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.QueryResponse:
        validate_tenant(request.tenant)  # before the query's own problems: a bad tenant is the first to fix
        query = convert.query_from_proto(request, max_filter_nodes=self.core.settings.max_filter_nodes)
        packed = convert.packed_encoding(request)
        plan = await self.core.plan(request.tenant, **query)
        result = await self.core.query(request.tenant, plan, skip_cache=request.skip_cache)
        out = convert.query_response(result.hits, request.tenant, packed)
        out.cached, out.index_generation = result.cached, result.generation
        return out

    async def GetStats(
        self, request: search_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetStatsResponse:
        stats, gen = await self.core.stats(request.tenant)
        return convert.stats_to_proto(stats, gen, self.core.backend.name, self.core.cache.name)

    async def GetIndexGeneration(
        self, request: search_pb2.GetIndexGenerationRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetIndexGenerationResponse:
        gen = await self.core.index_generation(request.tenant)
        return search_pb2.GetIndexGenerationResponse(index_generation=gen or 0, consistent=gen is not None)

    async def GetModelVersions(
        self, request: search_pb2.GetModelVersionsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.GetModelVersionsResponse:
        view = await self.core.model_versions(request.tenant, request.include_coverage)
        return convert.model_versions_to_proto(view)

    async def AddModelVersion(
        self, request: search_pb2.AddModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.AddModelVersionResponse:
        validate_tenant(request.tenant)
        view = await self.core.add_model_version(request.tenant, convert.model_from_proto(request.model))
        return search_pb2.AddModelVersionResponse(versions=convert.model_versions_to_proto(view))

    async def ActivateModelVersion(
        self, request: search_pb2.ActivateModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ActivateModelVersionResponse:
        validate_tenant(request.tenant)
        view = await self.core.activate_model_version(request.tenant, convert.model_from_proto(request.model))
        return search_pb2.ActivateModelVersionResponse(versions=convert.model_versions_to_proto(view))

    async def RollbackModelVersion(
        self, request: search_pb2.RollbackModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.RollbackModelVersionResponse:
        view = await self.core.rollback_model_version(request.tenant)
        return search_pb2.RollbackModelVersionResponse(versions=convert.model_versions_to_proto(view))

    async def RemoveModelVersion(
        self, request: search_pb2.RemoveModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.RemoveModelVersionResponse:
        validate_tenant(request.tenant)
        view, changed = await self.core.remove_model_version(
            request.tenant, convert.model_from_proto(request.model)
        )
        return search_pb2.RemoveModelVersionResponse(
            versions=convert.model_versions_to_proto(view), assets_changed=changed
        )

    async def ScanAssets(
        self, request: search_pb2.ScanAssetsRequest, context: grpc.aio.ServicerContext
    ) -> search_pb2.ScanAssetsResponse:
        page, token = await self.core.scan(request.tenant, request.page_token, request.page_size)
        return search_pb2.ScanAssetsResponse(
            assets=[convert.asset_record_to_proto(r, request.tenant) for r in page], next_page_token=token
        )

    async def WatchIndexGenerations(
        self, request: search_pb2.WatchIndexGenerationsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[search_pb2.WatchIndexGenerationsResponse]:
        async for push in self.core.cache.feed.watch():
            if push is None:
                yield search_pb2.WatchIndexGenerationsResponse(subscribed=True)
            else:
                yield search_pb2.WatchIndexGenerationsResponse(tenant=push[0], index_generation=push[1])


async def build(settings: SearchSettings) -> App:
    backend = make_backend(settings)
    await backend.start()
    cache = make_cache(settings)
    core = SearchCore(settings, backend, cache)
    core.run_in_background(cache.follow())
    repairer: VectorIndexRepairer | None = None
    if settings.backend == "weaviate" and settings.weaviate_repair_interval_s > 0:
        repairer = VectorIndexRepairer(
            settings.weaviate_host,
            settings.weaviate_http_port,
            settings.weaviate_grpc_port,
            settings.weaviate_collection,
            chunk=settings.weaviate_repair_chunk,
            timeout_s=settings.weaviate_timeout_s,
            api_key=weaviate_api_key(settings),
        )
        core.run_in_background(repairer.watch(settings.weaviate_repair_interval_s))
    probes = [Probe(backend.name, backend.ready, required=True)]
    if cache.name == "redis":
        probes.append(Probe("redis", cache.healthy, required=False))

    async def on_stop() -> None:
        await core.close()
        if repairer is not None:
            await repairer.close()
        await cache.close()
        await backend.close()

    return App(
        name="search",
        services=[(search_pb2_grpc.add_SearchServiceServicer_to_server, SearchServicer(core), SERVICE_NAME)],
        probes=probes,
        on_drain=cache.feed.close,  # watches never end by themselves: the drain would wait its grace
        on_stop=on_stop,
    )
