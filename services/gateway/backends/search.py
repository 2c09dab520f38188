"""SearchService over gRPC (Query, GetAssets, FindByContentHash, UpsertAssets, DeleteAssets,
GetIndexGeneration, WatchIndexGenerations), behind `base.SearchClient`."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import structlog
from imagesearch.v1 import search_pb2, search_pb2_grpc

from services.gateway import convert
from services.gateway.backends.calls import BackendCalls, CircuitBreaker, RetryPolicy
from services.gateway.backends.errors import BackendError
from services.gateway.backends.generations import GenerationWatch
from services.gateway.domain import (
    ModelRef,
    ModelVectors,
    PendingAnalysis,
    QueryResult,
    QuerySpec,
    ScannedAsset,
    StoredAsset,
    TenantModels,
    UpsertOutcome,
    UpsertRecord,
)

log = structlog.get_logger("backends")


class GrpcSearchClient:
    def __init__(
        self,
        ch: grpc.aio.Channel,
        breaker: CircuitBreaker,
        retry: RetryPolicy,
        query_deadline_s: float,
        write_deadline_s: float,
        watch: tuple[int, float, float] | None = None,  # (max tenants, renew s, retry s); None: no watch
        vector_encoding: str = "per_hit",  # candidates' vectors: "per_hit", or packed "float32"/"float16"
    ) -> None:
        self._packed = convert.PACKED_ENCODINGS[vector_encoding]
        self._stub = search_pb2_grpc.SearchServiceStub(ch)
        self._calls = BackendCalls("search", breaker, retry)
        self._read_s = query_deadline_s
        self._write_s = write_deadline_s
        self.breaker = breaker
        self.watch = None if watch is None else GenerationWatch(self._stub, self._read_generation, *watch)

    async def watch_generations(self) -> None:
        """Run for the gateway's lifetime when generations are watched (see generations.py)."""
        if self.watch is not None:
            await self.watch.run()

    def _wrote(self, tenant: str, generation: int) -> None:
        if self.watch is not None:
            self.watch.wrote(tenant, generation)

    async def query(self, spec: QuerySpec) -> QueryResult:
        req = convert.query_request(spec, self._packed)
        resp = await self._calls.call(self._stub.Query, req, self._read_s, idempotent=True, method="Query")
        return convert.query_result(resp)

    async def upsert(self, tenant: str, records: Sequence[UpsertRecord]) -> list[UpsertOutcome]:
        req = convert.upsert_request(tenant, records)
        resp = await self._calls.call(
            self._stub.UpsertAssets, req, self._write_s, idempotent=True, method="UpsertAssets"
        )
        self._wrote(tenant, resp.index_generation)
        return convert.upsert_outcomes(resp)

    async def upsert_vectors(
        self, tenant: str, items: Sequence[tuple[str, str, ModelRef, ModelVectors]]
    ) -> list[UpsertOutcome]:
        """A re-index write: only these vectors, into existing assets (UpsertAssets vectors_only)."""
        req = convert.vectors_only_request(tenant, items)
        resp = await self._calls.call(
            self._stub.UpsertAssets, req, self._write_s, idempotent=True, method="UpsertAssets"
        )
        self._wrote(tenant, resp.index_generation)
        return convert.upsert_outcomes(resp)

    async def scan(self, tenant: str, page_token: str, page_size: int) -> tuple[list[ScannedAsset], str]:
        req = search_pb2.ScanAssetsRequest(tenant=tenant, page_token=page_token, page_size=page_size)
        resp = await self._calls.call(
            self._stub.ScanAssets, req, self._read_s, idempotent=True, method="ScanAssets"
        )
        return convert.scanned_assets(resp), resp.next_page_token

    async def model_versions(self, tenant: str, coverage: bool = False) -> TenantModels:
        req = search_pb2.GetModelVersionsRequest(tenant=tenant, include_coverage=coverage)
        # Coverage reads every asset of the tenant: the write deadline bounds it.
        deadline = self._write_s if coverage else self._read_s
        resp = await self._calls.call(
            self._stub.GetModelVersions, req, deadline, idempotent=True, method="GetModelVersions"
        )
        return convert.tenant_models(resp)

    async def add_model_version(self, tenant: str, model: ModelRef) -> TenantModels:
        req = search_pb2.AddModelVersionRequest(tenant=tenant, model=convert.model_ref_pb(model))
        resp = await self._calls.call(
            self._stub.AddModelVersion, req, self._write_s, idempotent=True, method="AddModelVersion"
        )
        return convert.tenant_models(resp.versions)

    async def activate_model_version(self, tenant: str, model: ModelRef) -> TenantModels:
        req = search_pb2.ActivateModelVersionRequest(tenant=tenant, model=convert.model_ref_pb(model))
        resp = await self._calls.call(
            self._stub.ActivateModelVersion,
            req,
            self._write_s,
            idempotent=True,
            method="ActivateModelVersion",
        )
        self._wrote(tenant, resp.versions.index_generation)
        return convert.tenant_models(resp.versions)

    async def rollback_model_version(self, tenant: str) -> TenantModels:
        req = search_pb2.RollbackModelVersionRequest(tenant=tenant)
        resp = await self._calls.call(
            self._stub.RollbackModelVersion,
            req,
            self._write_s,
            idempotent=False,
            method="RollbackModelVersion",
        )
        self._wrote(tenant, resp.versions.index_generation)
        return convert.tenant_models(resp.versions)

    async def remove_model_version(self, tenant: str, model: ModelRef) -> tuple[TenantModels, int]:
        req = search_pb2.RemoveModelVersionRequest(tenant=tenant, model=convert.model_ref_pb(model))
        # Rewrites every asset holding the version: bounded by the caller's deadline only.
        resp = await self._calls.call(
            self._stub.RemoveModelVersion, req, 3600.0, idempotent=True, method="RemoveModelVersion"
        )
        self._wrote(tenant, resp.versions.index_generation)
        return convert.tenant_models(resp.versions), resp.assets_changed

    async def get_assets(
        self,
        tenant: str,
        asset_ids: Sequence[str],
        include_vectors: bool = False,
        include_unanalysed: bool = False,
    ) -> tuple[list[StoredAsset], list[str]]:
        req = search_pb2.GetAssetsRequest(
            tenant=tenant,
            asset_ids=asset_ids,
            include_vectors=include_vectors,
            include_unanalysed=include_unanalysed,
        )
        resp = await self._calls.call(
            self._stub.GetAssets, req, self._read_s, idempotent=True, method="GetAssets"
        )
        return convert.stored_assets(resp), list(resp.missing_asset_ids)

    async def pending_analysis(self, limit: int) -> list[PendingAnalysis]:
        req = search_pb2.ListPendingAnalysisRequest(limit=limit)
        resp = await self._calls.call(
            self._stub.ListPendingAnalysis, req, self._read_s, idempotent=True, method="ListPendingAnalysis"
        )
        return convert.pending_analysis(resp)

    async def find_by_content_hash(self, tenant: str, shas: Sequence[str]) -> dict[str, list[str]]:
        req = search_pb2.FindByContentHashRequest(tenant=tenant, content_sha256=shas)
        resp = await self._calls.call(
            self._stub.FindByContentHash, req, self._read_s, idempotent=True, method="FindByContentHash"
        )
        return convert.content_hash_holders(resp)

    async def delete_assets(self, tenant: str, asset_ids: Sequence[str]) -> list[tuple[str, bool]]:
        req = search_pb2.DeleteAssetsRequest(tenant=tenant, asset_ids=asset_ids)
        resp = await self._calls.call(
            self._stub.DeleteAssets, req, self._write_s, idempotent=False, method="DeleteAssets"
        )
        self._wrote(tenant, resp.index_generation)
        return [(r.asset_id, r.deleted) for r in resp.results]

    async def index_generation(self, tenant: str) -> int | None:
        if self.watch is not None:
            return await self.watch.generation(tenant)
        return await self._read_generation(tenant)

    async def _read_generation(self, tenant: str) -> int | None:
        req = search_pb2.GetIndexGenerationRequest(tenant=tenant)
        try:
            resp = await self._calls.call(
                self._stub.GetIndexGeneration,
                req,
                self._read_s,
                idempotent=False,
                method="GetIndexGeneration",
            )
        except BackendError as exc:
            # Uncached then; a search service that is really down fails the query that follows.
            log.debug("index generation unavailable; page cache bypassed", error=exc.message)
            return None
        return resp.index_generation if resp.consistent else None

    async def ready(self) -> bool:
        await self._calls.call(
            self._stub.GetStats,
            search_pb2.GetStatsRequest(tenant=""),
            self._read_s,
            idempotent=False,
            method="GetStats",
        )
        return True
