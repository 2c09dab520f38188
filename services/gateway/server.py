"""Gateway gRPC servicer: authentication, validation and proto <-> domain mapping only."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
import structlog
from imagesearch.v1 import admin_pb2, admin_pb2_grpc, gateway_pb2, gateway_pb2_grpc

from services.common.errors import DomainError, Unauthenticated
from services.common.jsonlines import JsonLinesWriter
from services.common.server import App, Probe
from services.gateway import convert, paging
from services.gateway.auth import Authenticator, JwksKeys, Keyring, Principal, TokenVerifier
from services.gateway.backends import make_backends
from services.gateway.backends.blobs import make_blob_store
from services.gateway.backends.errors import BackendError
from services.gateway.backends.feedback import make_feedback_store
from services.gateway.core import Gateway
from services.gateway.domain import IngestItem, SearchPage, SearchQuery
from services.gateway.experiments import SESSION_HEADER, Experiments, ExperimentsFileError
from services.gateway.policy import AuditLog, Policy
from services.gateway.ratelimit import Limits, Rate, RateLimits, make_limiter
from services.gateway.settings import GatewaySettings

SERVICE_NAME = "imagesearch.v1.GatewayService"
ADMIN_SERVICE_NAME = "imagesearch.v1.AdminService"

log = structlog.get_logger("gateway")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
ResponseT = TypeVar("ResponseT", gateway_pb2.SearchResponse, gateway_pb2.SearchSimilarResponse)


def _caller_error(exc: BackendError) -> Exception:
    """A backend's failure as the caller sees it: its status, the public message (no addresses,
    library wording or exception names); the details go to the log."""
    log.warning("backend call failed", backend=exc.backend, code=exc.code.name, detail=exc.message)
    return exc.for_caller()


def _backend_errors_for_callers(method: F) -> F:
    @functools.wraps(method)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except BackendError as exc:
            raise _caller_error(exc) from None

    return cast(F, wrapped)


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, gateway: Gateway, authenticator: Authenticator, audit: AuditLog) -> None:
        self._gw = gateway
        self._auth = authenticator
        self._audit = audit

    async def principal(self, ctx: grpc.aio.ServicerContext, action: str) -> Principal:
        return await self._principal(ctx, action)

    async def _principal(self, ctx: grpc.aio.ServicerContext, action: str) -> Principal:
        authorization = None
        for key, value in ctx.invocation_metadata() or ():
            if key == "authorization":
                authorization = value if isinstance(value, str) else value.decode()
                break
        try:
            return await self._auth.authenticate_async(authorization)
        except Unauthenticated as exc:
            self._audit.record(None, action, "deny", exc.message, stage="authenticate")
            raise

    @staticmethod
    def _page(page: SearchPage) -> dict[str, object]:
        return {
            "results": [convert.result_pb(r) for r in page.results],
            "next_page_token": page.next_page_token,
            "degraded": page.degraded,
            "degraded_reasons": page.degraded_reasons,
        }

    @staticmethod
    def _named(kind: type[ResponseT], page: SearchPage, render: Callable[[], ResponseT]) -> bytes:
        """The page's response, serialized once per cached page and reused by every hit, with this
        request's arm and search_id appended: protobuf parses concatenated messages as one message
        merged, so the bytes equal the whole message's (the interceptor sends bytes as they are)."""
        base = page.rendered.get(kind.DESCRIPTOR.name)
        if base is None:
            base = page.rendered[kind.DESCRIPTOR.name] = render().SerializeToString()
        return base + kind(arm=page.arm, search_id=page.search_id).SerializeToString()  # type: ignore[no-any-return]

    @staticmethod
    def _session(ctx: grpc.aio.ServicerContext) -> str:
        """The caller's session id (metadata `x-session-id`), for experiments whose unit is the session."""
        for key, value in ctx.invocation_metadata() or ():
            if key == SESSION_HEADER:
                return value if isinstance(value, str) else value.decode(errors="replace")
        return ""

    @_backend_errors_for_callers
    async def Search(
        self, request: gateway_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> bytes:  # a serialized SearchResponse (see _named)
        principal = await self._principal(context, "search")
        query = SearchQuery(
            text=request.text,
            image=request.image,
            filter=convert.filter_from_pb(request.filter) if request.HasField("filter") else None,
            page_size=request.page_size,
            page_token=request.page_token,
            alpha=request.alpha if request.HasField("alpha") else None,
            fusion=convert.fusion_from_pb(request.fusion),
            rerank=convert.rerank_options(request.rerank),
            include_unsafe=request.include_unsafe,
            licenses=tuple(request.licenses),
        )
        page = await self._gw.search(principal, query, self._session(context))
        return self._named(
            gateway_pb2.SearchResponse,
            page,
            lambda: gateway_pb2.SearchResponse(
                **self._page(page),  # type: ignore[arg-type]
                cached=page.cached,
                model=convert.model_ref_pb(page.model),
            ),
        )

    @_backend_errors_for_callers
    async def SearchSimilar(
        self, request: gateway_pb2.SearchSimilarRequest, context: grpc.aio.ServicerContext
    ) -> bytes:  # a serialized SearchSimilarResponse (see _named)
        principal = await self._principal(context, "search_similar")
        query = SearchQuery(
            similar_to=request.asset_id,
            filter=convert.filter_from_pb(request.filter) if request.HasField("filter") else None,
            page_size=request.page_size,
            page_token=request.page_token,
            rerank=convert.rerank_options(request.rerank),
            include_unsafe=request.include_unsafe,
        )
        page = await self._gw.search_similar(principal, query, self._session(context))
        return self._named(
            gateway_pb2.SearchSimilarResponse,
            page,
            lambda: gateway_pb2.SearchSimilarResponse(
                **self._page(page),  # type: ignore[arg-type]
                model=convert.model_ref_pb(page.model),
            ),
        )

    async def Ingest(
        self, request_iterator: AsyncIterator[gateway_pb2.IngestRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.IngestResponse]:
        principal = await self._principal(context, "ingest")

        async def items() -> AsyncIterator[IngestItem]:
            async for req in request_iterator:
                yield convert.ingest_item(req)

        try:
            async for ack in self._gw.ingest(principal, items()):
                yield convert.ingest_ack_pb(ack)
        except BackendError as exc:
            raise _caller_error(exc) from None

    @_backend_errors_for_callers
    async def GetAsset(
        self, request: gateway_pb2.GetAssetRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetAssetResponse:
        principal = await self._principal(context, "get_asset")
        asset, _reasons = await self._gw.get_asset(principal, request.asset_id)
        return gateway_pb2.GetAssetResponse(asset=convert.asset_pb(asset))

    async def GetAssetImage(
        self, request: gateway_pb2.GetAssetImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.GetAssetImageResponse]:
        principal = await self._principal(context, "get_asset_image")
        variant = convert.image_variant(request.variant)
        try:
            image = await self._gw.get_asset_image(principal, request.asset_id, variant)
        except BackendError as exc:
            raise _caller_error(exc) from None
        for message in convert.asset_image_pbs(image, self._gw.image_chunk_bytes):
            yield message

    @_backend_errors_for_callers
    async def DeleteAsset(
        self, request: gateway_pb2.DeleteAssetRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.DeleteAssetResponse:
        principal = await self._principal(context, "delete_asset")
        await self._gw.delete_asset(principal, request.asset_id)
        return gateway_pb2.DeleteAssetResponse()

    async def TakeDriftReference(
        self, request: gateway_pb2.TakeDriftReferenceRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.TakeDriftReferenceResponse:
        principal = await self._principal(context, "take_drift_reference")
        # Reference files are small: writing them inline costs less than a thread hop.
        reports = self._gw.take_drift_reference(principal)
        return gateway_pb2.TakeDriftReferenceResponse(streams=[convert.drift_stream_pb(r) for r in reports])

    @_backend_errors_for_callers
    async def RecordFeedback(
        self, request: gateway_pb2.RecordFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.RecordFeedbackResponse:
        principal = await self._principal(context, "record_feedback")
        acks = await self._gw.record_feedback(principal, [convert.feedback_event(e) for e in request.events])
        return gateway_pb2.RecordFeedbackResponse(results=[convert.feedback_result_pb(a) for a in acks])


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Model versions and re-index jobs of the caller's tenant (role `admin`; docs/LIFECYCLE.md)."""

    def __init__(self, gateway: Gateway, principal: Callable[..., Awaitable[Principal]]) -> None:
        self._gw = gateway
        self._principal = principal

    @_backend_errors_for_callers
    async def StartReindex(
        self, request: admin_pb2.StartReindexRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.StartReindexResponse:
        principal = await self._principal(context, "reindex")
        job = await self._gw.start_reindex(principal, request.tenant, convert.model_from_pb(request.target))
        return admin_pb2.StartReindexResponse(job=convert.reindex_job_pb(job))

    @_backend_errors_for_callers
    async def GetReindexJob(
        self, request: admin_pb2.GetReindexJobRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetReindexJobResponse:
        principal = await self._principal(context, "reindex")
        return admin_pb2.GetReindexJobResponse(
            job=convert.reindex_job_pb(self._gw.reindex_job(principal, request.tenant))
        )

    @_backend_errors_for_callers
    async def ListModelVersions(
        self, request: admin_pb2.ListModelVersionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListModelVersionsResponse:
        principal = await self._principal(context, "model_versions")
        return convert.tenant_models_pb(await self._gw.list_model_versions(principal, request.tenant))

    @_backend_errors_for_callers
    async def ActivateModel(
        self, request: admin_pb2.ActivateModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ActivateModelResponse:
        principal = await self._principal(context, "activate_model")
        state = await self._gw.activate_model(principal, request.tenant, convert.model_from_pb(request.model))
        return admin_pb2.ActivateModelResponse(versions=convert.tenant_models_pb(state))

    @_backend_errors_for_callers
    async def RollbackModel(
        self, request: admin_pb2.RollbackModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RollbackModelResponse:
        principal = await self._principal(context, "rollback_model")
        state = await self._gw.rollback_model(principal, request.tenant)
        return admin_pb2.RollbackModelResponse(versions=convert.tenant_models_pb(state))

    @_backend_errors_for_callers
    async def RemoveModel(
        self, request: admin_pb2.RemoveModelRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RemoveModelResponse:
        principal = await self._principal(context, "remove_model")
        state, changed = await self._gw.remove_model(
            principal, request.tenant, convert.model_from_pb(request.model)
        )
        return admin_pb2.RemoveModelResponse(versions=convert.tenant_models_pb(state), assets_changed=changed)


def limits_from_settings(s: GatewaySettings) -> Limits:
    return Limits(
        search_tenant=Rate.of(s.search_rate_per_tenant, s.search_burst_per_tenant),
        search_caller=Rate.of(s.search_rate_per_caller, s.search_burst_per_caller),
        ingest_tenant=Rate.of(s.ingest_rate_per_tenant, s.ingest_burst_per_tenant),
        ingest_caller=Rate.of(s.ingest_rate_per_caller, s.ingest_burst_per_caller),
        ingest_daily_tenant=s.ingest_daily_quota_per_tenant or None,
        ingest_daily_caller=s.ingest_daily_quota_per_caller or None,
    )


async def build(settings: GatewaySettings) -> App:
    keyring = Keyring.load(settings.api_keys_file, settings.api_keys_json, settings.default_safety_threshold)
    tokens = None
    if settings.token_secret is not None or settings.token_jwks_file is not None:
        tokens = TokenVerifier(
            settings.token_secret.get_secret_value().encode() if settings.token_secret else None,
            settings.token_audience,
            settings.token_leeway_s,
            keyring,
            JwksKeys.load(settings.token_jwks_file) if settings.token_jwks_file else None,
        )
    if not len(keyring) and tokens is None:
        log.warning(
            "no API keys and no token secret configured: every call will be UNAUTHENTICATED; "
            "set IMAGESEARCH_GATEWAY_API_KEYS_FILE or IMAGESEARCH_GATEWAY_API_KEYS_JSON"
        )
    backends = make_backends(settings)
    await backends.analyzer.warm_up_async()
    blobs = make_blob_store(settings)
    backends.start()
    audit_lines = JsonLinesWriter(settings.audit_log_path, settings.audit_flush_interval_s)
    audit_lines.start()
    audit = AuditLog(writer=audit_lines)
    policy = Policy(audit, settings.license_time_granularity_s)
    secret = settings.page_token_secret.get_secret_value().encode() if settings.page_token_secret else None
    limiter = make_limiter(
        settings.rate_limit_backend,
        settings.rate_limit_redis_url,
        settings.rate_limit_key_prefix,
        settings.rate_limit_redis_timeout_s,
        settings.rate_limit_redis_retry_after_s,
        settings.rate_limit_max_buckets,
    )
    rate_limits = RateLimits(limiter, limits_from_settings(settings))
    experiments = Experiments.load(settings.experiments_file)  # a bad file stops the start, named
    unserved = sorted(f"{m.name}:{m.version}" for m in experiments.models() - set(backends.model_encoders))
    if unserved:  # a canary arm whose version this gateway cannot encode would silently serve control
        raise ExperimentsFileError(
            "experiments name model versions with no encoder in IMAGESEARCH_GATEWAY_MODEL_ENCODERS: "
            f"{unserved}"
        )
    feedback_store = make_feedback_store(settings)
    gateway = Gateway(
        backends.encoder,
        backends.search,
        backends.analyzer,
        blobs,
        policy,
        paging.PageTokens(secret),
        settings,
        rate_limits,
        feedback_store,
        experiments,
        model_encoders=backends.model_encoders,
    )
    feedback = gateway.feedback
    assert feedback is not None
    await gateway.reindexer.resume_all()  # jobs a previous run left running (crash or restart)
    if backends.analyzer.enabled:
        # Resumes every asset left pending (by a killed gateway, or before a switch to inline mode).
        gateway.analysis.start()
    try:
        await feedback.refresh_gauges()  # the durable per-arm figures, before any feedback
    except DomainError as exc:
        log.warning("feedback store unavailable at start", detail=exc.message)
    log.info("experiments and feedback", experiments=len(experiments), feedback_store=feedback_store.name)
    probes = [
        Probe("search", backends.search.ready, required=True),
        Probe("encoder", backends.encoder.ready, required=False),
        # Without the object store ingest fails item by item; searches and reads of metadata still work.
        Probe("blobs", blobs.ready, required=False),
    ]
    if limiter.name == "redis":
        # Optional: while Redis is down the limiter fails open and the gateway stays SERVING.
        probes.append(Probe("ratelimit", limiter.healthy, required=False))
    if feedback_store.name == "redis":
        # Optional: searches go on without it (no search_id), RecordFeedback answers UNAVAILABLE.
        probes.append(Probe("feedback", feedback_store.healthy, required=False))

    async def stop() -> None:
        await gateway.reindexer.close()  # checkpoints stay: the next start resumes the jobs
        await gateway.analysis.close()  # queued items stay pending in the index
        if gateway.shadow is not None:
            await gateway.shadow.close()
        await backends.close()
        await blobs.close()
        await limiter.close()
        await feedback.close()  # the searches served since the last write are counted
        await feedback_store.close()
        await audit_lines.close()  # after the drain: every line of every finished call is written

    servicer = GatewayServicer(gateway, Authenticator(keyring, tokens), audit)
    return App(
        name="gateway",
        services=[
            (gateway_pb2_grpc.add_GatewayServiceServicer_to_server, servicer, SERVICE_NAME),
            (
                admin_pb2_grpc.add_AdminServiceServicer_to_server,
                AdminServicer(gateway, servicer.principal),
                ADMIN_SERVICE_NAME,
            ),
        ],
        # Search is required (nothing works without it); the encoder only degrades text search.
        probes=probes,
        on_stop=stop,
    )
