"""Typed async clients for the encoder and search services, with per-hop deadlines, retries with
jittered backoff (idempotent calls only) and one circuit breaker per backend.

- Deadlines: every call's timeout is `services.common.context.remaining(per_hop_s)`: the per-hop budget,
  capped by what is left of the caller's deadline (DEADLINE_EXCEEDED before a call that cannot finish).
- Retries: `tenacity`, exponential backoff with full jitter (`wait_random_exponential`), only for calls
  that are idempotent by contract (EncodeTexts/EncodeImages are pure functions; Query/GetAssets read;
  UpsertAssets addresses tenant + asset_id, so replaying it stores the same object) and only on
  UNAVAILABLE (the request most likely never ran). DeleteAssets is not retried: a replay after a lost
  reply would report "not found" for an asset this call deleted.
- Circuit breaker: `CircuitBreaker` below, a small class rather than a library. aiobreaker 1.2.0 and
  purgatory 3.0.1 were tried in a scratch venv: both let every concurrent call through in the
  half-open state (a recovering backend gets the full burst), aiobreaker is unmaintained since 2021
  and replaces the tripping call's own error with CircuitBreakerError; neither is in the suite's
  pinned set. This one admits exactly one probe while half-open and never hides a status.
- Errors become domain errors with the backend's own status code and a prefixed message, so the
  gateway's interceptor returns precise statuses (an open breaker is UNAVAILABLE, "retry in N s").

Domain code depends on the `EncoderClient` / `SearchClient` protocols, never on gRPC.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
import structlog
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc, search_pb2, search_pb2_grpc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from services.common.context import remaining
from services.common.errors import DomainError, Unavailable
from services.gateway import convert
from services.gateway.model import (
    Asset,
    FirstStageScores,
    Hit,
    ModelRef,
    QueryResult,
    QuerySpec,
    UpsertOutcome,
    Vector,
)

log = structlog.get_logger("clients")

T = TypeVar("T")

# Statuses that say "the backend is unhealthy", as opposed to "this request was wrong".
_BACKEND_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class BackendError(DomainError):
    """A backend's failure, carrying its status code so it is returned as precisely as it arrived."""

    def __init__(self, backend: str, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.code = code
        self.backend = backend


class BackendUnavailable(BackendError, Unavailable):
    """UNAVAILABLE from a backend (retryable for idempotent calls)."""

    def __init__(self, backend: str, message: str) -> None:
        BackendError.__init__(self, backend, grpc.StatusCode.UNAVAILABLE, message)


class BreakerOpen(BackendUnavailable):
    """The backend's breaker is open: failing fast without calling it (never retried)."""


# ----------------------------------------------------------------------------------------------
# Circuit breaker


class CircuitBreaker:
    """closed -> open after `failure_threshold` consecutive failures; open fails fast for `reset_s`;
    then half-open: exactly one probe call goes through, its success closes the breaker and its
    failure re-opens it for another `reset_s`. Calls made while the probe is out fail fast."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(
        self, name: str, failure_threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_out = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return self.CLOSED
        if self._clock() - self._opened_at >= self.reset_s:
            return self.HALF_OPEN
        return self.OPEN

    def acquire(self) -> bool:
        """Permission to call; True when this call is the half-open probe. Raises BreakerOpen."""
        state = self.state
        if state == self.CLOSED:
            return False
        if state == self.HALF_OPEN and not self._probe_out:
            self._probe_out = True
            return True
        assert self._opened_at is not None
        wait = max(0.0, self.reset_s - (self._clock() - self._opened_at))
        raise BreakerOpen(
            self.name,
            f"circuit open after {self.failure_threshold} consecutive failures; "
            f"retry in {wait:.1f}s" + (" (a probe call is in flight)" if state == self.HALF_OPEN else ""),
        )

    def record(self, ok: bool, probe: bool) -> None:
        if probe:
            self._probe_out = False
        if ok:
            if self._opened_at is not None:
                log.info("circuit closed", backend=self.name)
            self._failures = 0
            self._opened_at = None
            return
        self._failures += 1
        if probe or self._failures >= self.failure_threshold:
            if self._opened_at is None or probe:
                log.warning("circuit opened", backend=self.name, failures=self._failures)
            self._opened_at = self._clock()

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled): let the next call probe."""
        self._probe_out = False


# ----------------------------------------------------------------------------------------------
# Shared call machinery


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    initial_backoff_s: float = 0.02
    max_backoff_s: float = 0.5


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, BackendUnavailable) and not isinstance(exc, BreakerOpen)


class _Backend:
    def __init__(self, name: str, breaker: CircuitBreaker, retry: RetryPolicy) -> None:
        self.name = name
        self.breaker = breaker
        self.retry = retry

    def _error(self, exc: grpc.aio.AioRpcError) -> BackendError:
        code = exc.code()
        details = exc.details() or code.name.lower()
        if code == grpc.StatusCode.UNAVAILABLE:
            return BackendUnavailable(self.name, f"unavailable: {details}")
        return BackendError(self.name, code, details)

    async def _once(self, fn: Callable[..., Awaitable[T]], request: Any, per_hop_s: float) -> T:
        timeout = remaining(per_hop_s)  # raises DeadlineExceeded before a call that cannot finish
        probe = self.breaker.acquire()
        try:
            response = await fn(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            self.breaker.record(exc.code() not in _BACKEND_FAILURES, probe)
            raise self._error(exc) from None
        except BaseException:
            if probe:
                self.breaker.release_probe()
            raise
        self.breaker.record(True, probe)
        return response

    async def call(
        self, fn: Callable[..., Awaitable[T]], request: Any, per_hop_s: float, *, idempotent: bool
    ) -> T:
        if not idempotent or self.retry.attempts <= 1:
            return await self._once(fn, request, per_hop_s)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts),
            wait=wait_random_exponential(
                multiplier=self.retry.initial_backoff_s, max=self.retry.max_backoff_s
            ),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(fn, request, per_hop_s)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def channel(address: str, default_timeout_s: float, max_message_bytes: int) -> grpc.aio.Channel:
    from services.common.interceptors import client_interceptors

    return grpc.aio.insecure_channel(
        address,
        interceptors=client_interceptors(default_timeout_s),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 0),  # retries are ours (idempotent calls only)
        ],
    )


# ----------------------------------------------------------------------------------------------
# Encoder


@dataclass
class Encoded:
    """One item's encoding: a vector, or an error (google.rpc.Code number + message)."""

    vector: Vector | None
    error_code: int = 0
    error_message: str = ""
    truncated: bool = False


@dataclass
class EncodedBatch:
    model: ModelRef | None
    items: list[Encoded]


class EncoderClient(Protocol):
    async def encode_texts(self, texts: Sequence[str]) -> EncodedBatch: ...

    async def encode_images(self, images: Sequence[bytes]) -> EncodedBatch: ...

    async def ready(self) -> bool: ...


def _encoded(results: Sequence[encoder_pb2.EncodeResult]) -> list[Encoded]:
    out = []
    for r in results:
        if r.WhichOneof("outcome") == "embedding":
            out.append(Encoded(convert.vector(r.embedding), truncated=r.truncated))
        else:
            out.append(Encoded(None, r.error.code or 2, r.error.message or "encoding failed"))
    return out


class GrpcEncoderClient:
    def __init__(
        self,
        ch: grpc.aio.Channel,
        breaker: CircuitBreaker,
        retry: RetryPolicy,
        text_deadline_s: float,
        image_deadline_s: float,
    ) -> None:
        self._stub = encoder_pb2_grpc.EncoderServiceStub(ch)
        self._backend = _Backend("encoder", breaker, retry)
        self._text_s = text_deadline_s
        self._image_s = image_deadline_s
        self.breaker = breaker

    async def encode_texts(self, texts: Sequence[str]) -> EncodedBatch:
        req = encoder_pb2.EncodeTextsRequest(
            texts=[encoder_pb2.TextInput(id=str(i), text=t) for i, t in enumerate(texts)]
        )
        resp = await self._backend.call(self._stub.EncodeTexts, req, self._text_s, idempotent=True)
        return EncodedBatch(convert.model_ref(resp.model), _encoded(resp.results))

    async def encode_images(self, images: Sequence[bytes]) -> EncodedBatch:
        req = encoder_pb2.EncodeImagesRequest(
            images=[encoder_pb2.ImageInput(id=str(i), data=b) for i, b in enumerate(images)]
        )
        resp = await self._backend.call(self._stub.EncodeImages, req, self._image_s, idempotent=True)
        return EncodedBatch(convert.model_ref(resp.model), _encoded(resp.results))

    async def ready(self) -> bool:
        resp = await self._backend.call(
            self._stub.GetModelInfo, encoder_pb2.GetModelInfoRequest(), self._text_s, idempotent=False
        )
        return bool(resp.model.name)


# ----------------------------------------------------------------------------------------------
# Search


@dataclass
class UpsertRecord:
    asset: Asset
    vector: Vector
    model: ModelRef | None


class SearchClient(Protocol):
    async def query(self, spec: QuerySpec) -> QueryResult: ...

    async def upsert(self, tenant: str, records: Sequence[UpsertRecord]) -> list[UpsertOutcome]: ...

    async def get_assets(
        self, tenant: str, asset_ids: Sequence[str], include_vectors: bool = False
    ) -> tuple[list[Hit], list[str]]: ...

    async def delete_assets(self, tenant: str, asset_ids: Sequence[str]) -> list[tuple[str, bool]]: ...

    async def index_generation(self, tenant: str) -> int | None:
        """The tenant's index generation when it is consistent; None when it cannot be trusted or
        asked (then nothing derived from queries may be served from a cache)."""

    async def ready(self) -> bool: ...


class GrpcSearchClient:
    def __init__(
        self,
        ch: grpc.aio.Channel,
        breaker: CircuitBreaker,
        retry: RetryPolicy,
        query_deadline_s: float,
        write_deadline_s: float,
    ) -> None:
        self._stub = search_pb2_grpc.SearchServiceStub(ch)
        self._backend = _Backend("search", breaker, retry)
        self._read_s = query_deadline_s
        self._write_s = write_deadline_s
        self.breaker = breaker

    async def query(self, spec: QuerySpec) -> QueryResult:
        req = search_pb2.QueryRequest(
            tenant=spec.tenant,
            text=spec.text,
            limit=spec.limit,
            offset=spec.offset,
            candidate_window=spec.candidate_window,
            include_vectors=spec.include_vectors,
            skip_cache=spec.skip_cache,
        )
        if spec.vector is not None:
            req.vector.CopyFrom(convert.embedding_pb(spec.vector, spec.model))
        if spec.alpha is not None:
            req.alpha = spec.alpha
        f = convert.filter_pb(spec.filter)
        if f is not None:
            req.filter.CopyFrom(f)
        resp = await self._backend.call(self._stub.Query, req, self._read_s, idempotent=True)
        hits = []
        for h in resp.hits:
            s = h.scores
            hits.append(
                Hit(
                    asset=convert.ranked_asset(h.asset),
                    scores=_scores(s),
                    vector=convert.vector(h.image_embedding) if h.HasField("image_embedding") else None,
                )
            )
        return QueryResult(hits, cached=resp.cached, index_generation=resp.index_generation)

    async def upsert(self, tenant: str, records: Sequence[UpsertRecord]) -> list[UpsertOutcome]:
        req = search_pb2.UpsertAssetsRequest(
            tenant=tenant,
            assets=[
                search_pb2.AssetRecord(
                    asset=convert.asset_pb(r.asset), image_embedding=convert.embedding_pb(r.vector, r.model)
                )
                for r in records
            ],
        )
        resp = await self._backend.call(self._stub.UpsertAssets, req, self._write_s, idempotent=True)
        return [
            UpsertOutcome(r.asset_id, r.error.code if r.HasField("error") else 0, r.error.message)
            for r in resp.results
        ]

    async def get_assets(
        self, tenant: str, asset_ids: Sequence[str], include_vectors: bool = False
    ) -> tuple[list[Hit], list[str]]:
        req = search_pb2.GetAssetsRequest(tenant=tenant, asset_ids=asset_ids, include_vectors=include_vectors)
        resp = await self._backend.call(self._stub.GetAssets, req, self._read_s, idempotent=True)
        found = [
            Hit(
                asset=convert.asset(r.asset),
                scores=_scores(None),
                vector=convert.vector(r.image_embedding) if r.HasField("image_embedding") else None,
            )
            for r in resp.assets
        ]
        return found, list(resp.missing_asset_ids)

    async def delete_assets(self, tenant: str, asset_ids: Sequence[str]) -> list[tuple[str, bool]]:
        req = search_pb2.DeleteAssetsRequest(tenant=tenant, asset_ids=asset_ids)
        resp = await self._backend.call(self._stub.DeleteAssets, req, self._write_s, idempotent=False)
        return [(r.asset_id, r.deleted) for r in resp.results]

    async def index_generation(self, tenant: str) -> int | None:
        req = search_pb2.GetIndexGenerationRequest(tenant=tenant)
        try:
            resp = await self._backend.call(
                self._stub.GetIndexGeneration, req, self._read_s, idempotent=False
            )
        except BackendError as exc:
            # Uncached then; a search service that is really down fails the query that follows.
            log.debug("index generation unavailable; page cache bypassed", error=exc.message)
            return None
        return resp.index_generation if resp.consistent else None

    async def ready(self) -> bool:
        await self._backend.call(
            self._stub.GetStats, search_pb2.GetStatsRequest(tenant=""), self._read_s, idempotent=False
        )
        return True


def _scores(s: search_pb2.ScoreBreakdown | None) -> FirstStageScores:
    if s is None:
        return FirstStageScores()
    return FirstStageScores(
        fused=s.fused,
        keyword=s.keyword_contribution,
        vector=s.vector_contribution,
        bm25=s.bm25,
        cosine=s.cosine_similarity,
    )
