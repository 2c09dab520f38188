"""How the gateway calls a backend: per-hop deadlines, retries with jittered backoff (idempotent calls
only) and one circuit breaker per backend, with a circuit per method.

- Deadlines: every call's timeout is `services.common.context.remaining(per_hop_s)`: the per-hop budget,
  capped by what is left of the caller's deadline (DEADLINE_EXCEEDED before a call that cannot finish).
- Retries: `tenacity`, exponential backoff with full jitter (`wait_random_exponential`), only for calls
  that are idempotent by contract (EncodeTexts/EncodeImages are pure functions; Query/GetAssets/
  FindByContentHash read; UpsertAssets addresses tenant + asset_id, so replaying it stores the same
  object) and only on UNAVAILABLE (the request most likely never ran). DeleteAssets is not retried: a
  replay after a lost reply would report "not found" for an asset this call deleted.
- Circuit breaker: `CircuitBreaker` below, a small class rather than a library. aiobreaker and
  purgatory both let every concurrent call through in the half-open state (a recovering backend gets
  the full burst), aiobreaker is unmaintained and replaces the tripping call's own error with
  CircuitBreakerError; neither is in the suite's pinned set. This one admits exactly one probe while
  half-open and never hides a status.
- Errors become the domain errors of `errors.py` with the backend's own status, so the gateway's
  interceptor returns precise statuses (an open breaker is UNAVAILABLE, "retry in N s").
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import structlog
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from services.common.balancing import balancing_options, grpc_target
from services.common.context import remaining, request_id
from services.gateway.backends.errors import (
    BackendDeadlineExceeded,
    BackendError,
    BackendNotFound,
    BackendUnavailable,
    BreakerOpen,
)

log = structlog.get_logger("backends")

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


@dataclass
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    probe_out: bool = False


class CircuitBreaker:
    """One breaker per backend, with one circuit per method of it.

    Each circuit: closed -> open after `failure_threshold` consecutive failures; open fails fast for
    `reset_s`; then half-open: exactly one probe call goes through, its success closes the circuit
    and its failure re-opens it for another `reset_s`. Calls made while the probe is out fail fast.

    Per method, because a backend's methods depend on different things: the search service answers
    GetIndexGeneration from its cache while Query needs the index store (Weaviate), and the encoder's
    text and image towers are separate models. With one circuit per backend, the generation read
    every search makes first succeeded during a Weaviate outage and reset the count, so the circuit
    never opened and every search waited out its deadline. A success now closes only its own method's
    circuit; the price is that each method learns of an outage on its own (`failure_threshold` calls
    each), which is bounded. Backends never share a breaker (`make_backends` builds one each).
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(
        self, name: str, failure_threshold: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_s = reset_s
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def state_of(self, method: str = "") -> str:
        circuit = self._circuits.get(method)
        if circuit is None or circuit.opened_at is None:
            return self.CLOSED
        if self._clock() - circuit.opened_at >= self.reset_s:
            return self.HALF_OPEN
        return self.OPEN

    @property
    def state(self) -> str:
        """The backend's worst circuit: open if any method's is, else half-open if any is."""
        states = {self.state_of(m) for m in self._circuits}
        return next((st for st in (self.OPEN, self.HALF_OPEN) if st in states), self.CLOSED)

    def acquire(self, method: str = "") -> bool:
        """Permission to call `method`; True when this call is its half-open probe. Raises BreakerOpen."""
        state = self.state_of(method)
        if state == self.CLOSED:
            return False
        circuit = self._circuits[method]
        if state == self.HALF_OPEN and not circuit.probe_out:
            circuit.probe_out = True
            return True
        assert circuit.opened_at is not None
        wait = max(0.0, self.reset_s - (self._clock() - circuit.opened_at))
        which = f" for {method}" if method else ""
        raise BreakerOpen(
            self.name,
            f"circuit open{which} after {self.failure_threshold} consecutive failures; "
            f"retry in {wait:.1f}s" + (" (a probe call is in flight)" if state == self.HALF_OPEN else ""),
        )

    def record(self, ok: bool, probe: bool, method: str = "") -> None:
        circuit = self._circuits.setdefault(method, _Circuit())
        if probe:
            circuit.probe_out = False
        if ok:
            if circuit.opened_at is not None:
                log.info("circuit closed", backend=self.name, method=method)
            circuit.failures = 0
            circuit.opened_at = None
            return
        circuit.failures += 1
        if probe or circuit.failures >= self.failure_threshold:
            if circuit.opened_at is None or probe:
                log.warning("circuit opened", backend=self.name, method=method, failures=circuit.failures)
            circuit.opened_at = self._clock()

    def release_probe(self, method: str = "") -> None:
        """The probe ended without a verdict (cancelled): let the next call probe."""
        circuit = self._circuits.get(method)
        if circuit is not None:
            circuit.probe_out = False


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    initial_backoff_s: float
    max_backoff_s: float


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, BackendUnavailable) and not isinstance(exc, BreakerOpen)


# Statuses whose backend message tells the caller what it did wrong: passed on (cut before any
# exception class name). Any other status is the backend's own trouble: the caller gets a plain
# sentence and the details (addresses, the gRPC library's wording) stay in the logs.
_CALLER_STATUSES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def backend_error(backend: str, exc: grpc.aio.AioRpcError) -> BackendError:
    """The domain error for a backend's failed call."""
    code = exc.code()
    details = exc.details() or code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        return BackendUnavailable(
            backend, f"unavailable: {details}", public=f"the {backend} service is unavailable; retry shortly"
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return BackendNotFound(backend, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendDeadlineExceeded(
            backend,
            details,
            public=f"the {backend} service did not answer in time; retry, or allow a longer deadline",
        )
    if code in _CALLER_STATUSES:
        return BackendError(backend, details, code)
    rid = request_id()
    report = f", or report request id {rid}" if rid else ""
    return BackendError(backend, details, code, public=f"the {backend} service failed; retry later{report}")


class BackendCalls:
    """Calls to one backend: deadline, breaker, retries, domain errors."""

    def __init__(self, name: str, breaker: CircuitBreaker, retry: RetryPolicy) -> None:
        self.name = name
        self.breaker = breaker
        self.retry = retry

    async def _once(self, fn: Callable[..., Awaitable[T]], request: Any, per_hop_s: float, method: str) -> T:
        timeout = remaining(per_hop_s)  # raises DeadlineExceeded before a call that cannot finish
        probe = self.breaker.acquire(method)
        try:
            response = await fn(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            self.breaker.record(exc.code() not in _BACKEND_FAILURES, probe, method)
            raise backend_error(self.name, exc) from None
        except BaseException:
            if probe:
                self.breaker.release_probe(method)
            raise
        self.breaker.record(True, probe, method)
        return response

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        request: Any,
        per_hop_s: float,
        *,
        idempotent: bool,
        method: str = "",
    ) -> T:
        """`method` names the backend method (its own circuit; see CircuitBreaker)."""
        if not idempotent or self.retry.attempts <= 1:
            return await self._once(fn, request, per_hop_s, method)
        # The first attempt runs outside tenacity: nearly every call succeeds at once, and a retry loop
        # built per call costs more than the call's own Python and leaves a reference cycle behind.
        # Its retryable failure becomes the loop's first attempt, so the waits and the attempts
        # counted are the loop's own.
        try:
            return await self._once(fn, request, per_hop_s, method)
        except BackendUnavailable as exc:
            if not _retryable(exc):
                raise
            first_failure: BaseException | None = exc
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
                if first_failure is not None:
                    failure, first_failure = first_failure, None
                    raise failure
                return await self._once(fn, request, per_hop_s, method)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


def channel(
    address: str,
    default_timeout_s: float,
    max_message_bytes: int,
    credentials: grpc.ChannelCredentials | None = None,
    server_identity: str = "",
) -> grpc.aio.Channel:
    """A channel to another suite service (one address or several replicas: services/common/balancing.py);
    over mutual TLS when `credentials` are given, then the server must present `server_identity`'s suite
    certificate whatever name or address the replica was reached at."""
    from services.common.interceptors import client_interceptors

    interceptors = client_interceptors(default_timeout_s)
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.enable_retries", 0),  # retries are ours (idempotent calls only)
        *balancing_options(address),
    ]
    target = grpc_target(address)
    if credentials is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors, options=options)
    if server_identity:
        # Each suite certificate names its identity as a DNS SAN: a replica reached as 10.0.3.7 or
        # rel-search-0.rel-search is verified as "search".
        options.append(("grpc.ssl_target_name_override", server_identity))
    return grpc.aio.secure_channel(target, credentials, interceptors=interceptors, options=options)
