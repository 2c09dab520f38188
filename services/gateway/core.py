"""The gateway domain service (what the servicer calls): the search flow, the ingest flow, and the
single-asset calls, over one shared read layer.

    Gateway ─┬─ RateLimits  (ratelimit.py: per-tenant and per-caller token buckets, before any work)
             ├─ SearchFlow  (search_flow.py: page cache, query vectors, visibility, rerank)
             ├─ IngestFlow  (ingest_flow.py: batchers, id locks, hash claims, duplicates, upserts)
             ├─ Experiments (experiments.py: the arm that serves each search, by a stable hash)
             ├─ FeedbackFlow (feedback_flow.py: search ids, RecordFeedback, per-arm metrics)
             ├─ CallerPreferences (preferences.py: the optional per-caller boost from recent clicks)
             ├─ AssetImages (images.py: originals and thumbnails in the object store)
             └─ Reads       (reads.py: query, get by id, visibility check; used by both)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

import structlog

from services.common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.gateway.analysis_queue import AnalysisQueue, AnalysisQueueConfig
from services.gateway.auth import TENANT_RE, Principal
from services.gateway.backends.base import Analyzer, EncoderClient, ModelVersionsClient, SearchClient
from services.gateway.backends.blobs import BlobStore
from services.gateway.backends.feedback import FeedbackStore
from services.gateway.domain import (
    Asset,
    AssetImage,
    FeedbackAck,
    FeedbackEvent,
    ImageVariant,
    IngestAck,
    IngestItem,
    ModelRef,
    ReindexJob,
    SearchPage,
    SearchQuery,
    TenantModels,
)
from services.gateway.drift import DriftConfig, DriftMonitor, StreamReport
from services.gateway.experiments import Assignment, Experiments
from services.gateway.feedback_flow import FeedbackFlow
from services.gateway.images import AssetImages
from services.gateway.ingest_flow import IngestConfig, IngestFlow
from services.gateway.limits import MAX_ASSET_ID_CHARS
from services.gateway.model_refs import check_model, parse_model
from services.gateway.model_versions import ModelVersions
from services.gateway.paging import PageTokens
from services.gateway.policy import Policy
from services.gateway.preferences import CallerPreferences
from services.gateway.ratelimit import RateLimits
from services.gateway.reads import Reads
from services.gateway.reindex import ReindexConfig, Reindexer
from services.gateway.search_flow import SearchConfig, SearchFlow
from services.gateway.settings import GatewaySettings
from services.gateway.shadow import Shadow

log = structlog.get_logger("gateway")


class Gateway:
    def __init__(
        self,
        encoder: EncoderClient,
        search: SearchClient,
        analyzer: Analyzer,
        blobs: BlobStore,
        policy: Policy,
        page_tokens: PageTokens,
        settings: GatewaySettings,
        rate_limits: RateLimits | None = None,
        feedback_store: FeedbackStore | None = None,
        experiments: Experiments | None = None,
        model_encoders: Mapping[ModelRef, EncoderClient] | None = None,
    ) -> None:
        self.policy = policy
        self.experiments = experiments or Experiments()
        self.images = AssetImages(blobs, settings.thumbnail_max_side, settings.thumbnail_quality)
        self.image_chunk_bytes = settings.blob_chunk_bytes
        self.rate_limits = rate_limits
        self._search = search
        self.drift = DriftMonitor(DriftConfig.from_settings(settings))
        self.reads = Reads(search, policy)
        # Model versions (docs/LIFECYCLE.md): the search client also speaks the model-version calls.
        versions_client = cast(ModelVersionsClient, search)
        self.models = ModelVersions(
            versions_client, model_encoders or {}, settings.model_state_ttl_s, settings.max_tenants_tracked
        )
        self.shadow = (
            Shadow(
                search,
                self.models,
                parse_model(settings.shadow_model),
                settings.shadow_share,
                settings.shadow_max_in_flight,
            )
            if settings.shadow_model
            else None
        )
        self.reindexer = Reindexer(
            versions_client,
            blobs,
            self.models,
            ReindexConfig(
                state_dir=Path(settings.data_dir) / "reindex",
                rate_per_s=settings.reindex_rate_per_s,
                batch=settings.reindex_batch,
                concurrency=settings.reindex_concurrency,
                page_size=settings.reindex_page_size,
                sweep_delay_s=settings.model_state_ttl_s + 1.0,
            ),
            drift=self.drift,
        )
        self.preferences = CallerPreferences.from_settings(feedback_store, settings)
        self.search_flow = SearchFlow(
            encoder,
            search,
            self.reads,
            policy,
            page_tokens,
            SearchConfig.from_settings(settings),
            drift=self.drift,
            preferences=self.preferences,
            models=self.models,
            shadow=self.shadow,
        )
        self.ingest_flow = IngestFlow(
            encoder,
            search,
            self.reads,
            analyzer,
            self.images,
            policy,
            IngestConfig.from_settings(settings),
            on_model=self.search_flow.vectors.note_model,
            admit=self._admit_ingest_item if rate_limits is not None else None,
            drift=self.drift,
            models=self.models,
        )
        # Deferred safety + OCR behind the acknowledgement (analysis_mode=deferred); started by the server.
        self.analysis = AnalysisQueue(
            search,
            self.reads,
            self.images,
            analyzer,
            self.ingest_flow,
            AnalysisQueueConfig.from_settings(settings),
        )
        if analyzer.enabled:  # also inline: a failed asset re-sent is analysed again by the worker
            self.ingest_flow.on_pending = self.analysis.submit
        self.feedback = (
            FeedbackFlow(
                feedback_store,
                policy,
                settings.feedback_search_ttl_s,
                settings.feedback_record_retry_after_s,
                settings.feedback_pages_remembered,
                settings.feedback_count_flush_s,
            )
            if feedback_store is not None
            else None
        )

    async def _admit_ingest_item(self, principal: Principal) -> None:
        if self.rate_limits is not None:
            await self.rate_limits.ingest_item(principal.tenant, principal.subject)

    async def _admit_search(self, principal: Principal) -> None:
        if self.rate_limits is not None:
            await self.rate_limits.search(principal.tenant, principal.subject)

    async def search(self, principal: Principal, q: SearchQuery, session: str = "") -> SearchPage:
        await self._admit_search(principal)
        assignment = self.experiments.assign(principal, session)
        page = await self.search_flow.search(principal, assignment.arm.apply(q))
        return await self._served(principal, "search", assignment, page)

    async def search_similar(self, principal: Principal, q: SearchQuery, session: str = "") -> SearchPage:
        await self._admit_search(principal)
        assignment = self.experiments.assign(principal, session)
        page = await self.search_flow.search_similar(principal, assignment.arm.apply(q))
        return await self._served(principal, "search_similar", assignment, page)

    async def _served(
        self, principal: Principal, action: str, assignment: Assignment, page: SearchPage
    ) -> SearchPage:
        """The page named with its arm and a search_id (a copy: the page cache may share `page`)."""
        search_id = ""
        if self.feedback is not None:
            search_id = await self.feedback.served(principal, action, assignment, page)
        return replace(page, arm=assignment.arm.name, search_id=search_id)

    async def record_feedback(
        self, principal: Principal, events: Sequence[FeedbackEvent]
    ) -> list[FeedbackAck]:
        if self.feedback is None:
            raise FailedPrecondition("this gateway runs without a feedback store")
        acks = await self.feedback.record(principal, events)
        if self.preferences is not None:
            self.preferences.forget(principal)  # its next search sees the new clicks
        return acks

    def ingest(self, principal: Principal, items: AsyncIterator[IngestItem]) -> AsyncIterator[IngestAck]:
        return self.ingest_flow.ingest(principal, items)

    def take_drift_reference(self, principal: Principal) -> list[StreamReport]:
        """Admin: the caller's tenant's current drift statistics become its reference (every model
        version it has statistics for). Returns each stream as it stood just before."""
        self.policy.authorize(principal, "take_drift_reference")
        return self.drift.take_reference(principal.tenant)

    # ---- admin: model versions (AdminService; docs/LIFECYCLE.md) -----------------------------------

    def _admin_tenant(self, principal: Principal, action: str, tenant: str) -> str:
        """The tenant an admin call acts on: the caller's own (empty means it; another is refused)."""
        self.policy.authorize(principal, action)
        if tenant and not TENANT_RE.match(tenant):
            raise InvalidArgument(f"tenant {tenant[:80]!r} is invalid: 1-64 of letters, digits, '-' and '_'")
        if tenant and tenant != principal.tenant:
            raise PermissionDenied(
                f"credential {principal.subject!r} administers tenant {principal.tenant!r} only"
            )
        return principal.tenant

    async def start_reindex(self, principal: Principal, tenant: str, target: ModelRef) -> ReindexJob:
        return await self.reindexer.start(
            self._admin_tenant(principal, "reindex", tenant), check_model(target)
        )

    def reindex_job(self, principal: Principal, tenant: str) -> ReindexJob:
        return self.reindexer.get(self._admin_tenant(principal, "reindex", tenant))

    async def list_model_versions(self, principal: Principal, tenant: str) -> TenantModels:
        tenant = self._admin_tenant(principal, "model_versions", tenant)
        return self._with_encoders(await self.models.client.model_versions(tenant, coverage=True))

    async def activate_model(self, principal: Principal, tenant: str, model: ModelRef) -> TenantModels:
        tenant = self._admin_tenant(principal, "activate_model", tenant)
        check_model(model)
        if self.models.configured and self.models.encoder_of(model) is None:
            raise FailedPrecondition(
                f"this gateway has no encoder for {model.name}:{model.version}, so queries could not use "
                "it (IMAGESEARCH_GATEWAY_MODEL_ENCODERS)"
            )
        await self.models.client.activate_model_version(tenant, model)
        self.models.forget(tenant)
        # The activation-time drift reference of the new version (its re-indexed images' statistics;
        # streams with no samples yet get theirs automatically once they have enough).
        self.drift.take_reference(tenant, model)
        return self._with_encoders(await self.models.client.model_versions(tenant, coverage=True))

    async def rollback_model(self, principal: Principal, tenant: str) -> TenantModels:
        tenant = self._admin_tenant(principal, "rollback_model", tenant)
        await self.models.client.rollback_model_version(tenant)
        self.models.forget(tenant)
        return self._with_encoders(await self.models.client.model_versions(tenant, coverage=True))

    async def remove_model(
        self, principal: Principal, tenant: str, model: ModelRef
    ) -> tuple[TenantModels, int]:
        tenant = self._admin_tenant(principal, "remove_model", tenant)
        check_model(model)
        job = self.reindexer.running(tenant)
        if job is not None and job.target == model:
            raise FailedPrecondition(
                f"a re-index of tenant '{tenant}' to {model.name}:{model.version} is running"
            )
        state, changed = await self.models.client.remove_model_version(tenant, model)
        self.models.forget(tenant)
        return self._with_encoders(state), changed

    def _with_encoders(self, state: TenantModels) -> TenantModels:
        versions = tuple(
            replace(
                v,
                encoder_configured=not self.models.configured or self.models.encoder_of(v.model) is not None,
            )
            for v in state.versions
        )
        return replace(state, versions=versions)

    async def get_asset(self, principal: Principal, asset_id: str) -> tuple[Asset, list[str]]:
        action = "get_asset"
        self.policy.authorize(principal, action, target=asset_id)
        _check_asset_id(asset_id)
        vis = self.policy.visibility(principal, action)
        stored = await self.reads.visible_asset(principal, action, vis, asset_id)
        return stored.asset, self.policy.reasons(vis, stored.asset)

    async def get_asset_image(self, principal: Principal, asset_id: str, variant: ImageVariant) -> AssetImage:
        """The asset's original or thumbnail, to whoever may read the asset (GetAsset's rules)."""
        action = "get_asset_image"
        self.policy.authorize(principal, action, target=asset_id)
        _check_asset_id(asset_id)
        vis = self.policy.visibility(principal, action)
        stored = await self.reads.visible_asset(principal, action, vis, asset_id)
        return await self.images.read(principal.tenant, asset_id, stored.asset.content_sha256, variant)

    async def delete_asset(self, principal: Principal, asset_id: str) -> None:
        """Remove the asset from the index, then its images unless another asset of the tenant holds
        the same bytes."""
        action = "delete_asset"
        self.policy.authorize(principal, action, target=asset_id)
        _check_asset_id(asset_id)
        tenant = principal.tenant
        # An asset still being analysed is deleted too (with its images): nothing of it is returned.
        found = await self.reads.get(tenant, [asset_id], include_vectors=False, include_unanalysed=True)
        sha = next((s.asset.content_sha256 for s in found if s.asset.asset_id == asset_id), "")
        try:
            results = await self._search.delete_assets(tenant, [asset_id])
        except NotFound:  # the tenant has no assets
            results = []
        if not any(aid == asset_id and deleted for aid, deleted in results):
            raise NotFound(f"asset {asset_id!r} not found in tenant {tenant!r}")
        if sha:
            await self._forget_unheld_images(tenant, sha, asset_id)

    async def _forget_unheld_images(self, tenant: str, sha: str, deleted_id: str) -> None:
        """Best effort once the asset is gone: a failure leaves unreferenced images (logged), never a
        failed delete. No ingest of the same bytes runs meanwhile (it would store them again before
        the index knew it holds them)."""
        try:
            async with self.ingest_flow.holding_content(tenant, sha):
                try:
                    holders = await self._search.find_by_content_hash(tenant, [sha])
                except NotFound:  # the tenant's last asset was this one
                    holders = {}
                if any(a != deleted_id for a in holders.get(sha, [])):
                    return
                await self.images.forget(tenant, sha)
        except DomainError as exc:
            log.warning(
                "images of a deleted asset were not removed", tenant=tenant, asset_id=deleted_id,
                detail=exc.message,
            )  # fmt: skip


def _check_asset_id(asset_id: str) -> None:
    if not 1 <= len(asset_id) <= MAX_ASSET_ID_CHARS:
        raise InvalidArgument(f"asset_id must be 1-{MAX_ASSET_ID_CHARS} characters")
