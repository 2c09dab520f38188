"""Server bootstrap shared by every service: one place for grpc.aio options, interceptors, health,
reflection, metrics, readiness polling and graceful shutdown.

A service module provides `build(settings) -> App` (its servicers, backend readiness probes and
lifecycle hooks) and calls `run(App builder, SettingsClass, name)` from its `__main__`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.common import tls
from services.common.authz import AuthorizationInterceptor, CallerPolicy
from services.common.interceptors import ServerInterceptor
from services.common.logging import configure_logging
from services.common.metrics import BACKEND_READY, start_metrics_server
from services.common.settings import PublicTlsSettings, ServiceSettings

log = structlog.get_logger("server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# A health entry that is SERVING whenever the process answers at all, whatever its backends say: what a
# liveness probe asks (a restart cannot fix an unreachable database; "" and the service names can).
LIVENESS = "liveness"


@dataclass
class Probe:
    """A backend readiness check. `required` backends gate the service's health; optional ones
    (e.g. a cache) only report their own entry, `backend:<name>`, so the service stays SERVING
    in a degraded mode."""

    name: str
    check: Callable[[], Awaitable[bool]]
    required: bool = True


@dataclass
class App:
    """What a service contributes to the shared server."""

    name: str
    # (add_XServicer_to_server function, servicer instance, full service name)
    services: list[tuple[Callable[[Any, grpc.aio.Server], None], Any, str]]
    probes: list[Probe] = field(default_factory=list)
    # Called when the drain starts: ends long-lived streams (watches), which would hold it to the grace.
    on_drain: Callable[[], None] | None = None
    on_stop: Callable[[], Awaitable[None]] | None = None


class ReadinessMonitor:
    """Re-checks every probe periodically and mirrors the results into the health service."""

    def __init__(self, health: HealthServicer, app: App, interval_s: float) -> None:
        self._health = health
        self._app = app
        self._interval_s = interval_s
        self._last: dict[str, bool] = {}

    async def check_once(self) -> bool:
        async def run(probe: Probe) -> bool:
            try:
                return bool(await asyncio.wait_for(probe.check(), timeout=self._interval_s))
            except Exception as exc:  # a probe that raises means "not ready", never a crash
                log.debug("probe failed", backend=probe.name, error=repr(exc))
                return False

        results = await asyncio.gather(*(run(p) for p in self._app.probes))
        overall = True
        for probe, ok in zip(self._app.probes, results, strict=True):
            if self._last.get(probe.name) != ok:
                BACKEND_READY.labels(probe.name, str(ok).lower()).inc()
                (log.info if ok else log.warning)("backend readiness", backend=probe.name, ready=ok)
                self._last[probe.name] = ok
            await self._health.set(f"backend:{probe.name}", SERVING if ok else NOT_SERVING)
            overall = overall and (ok or not probe.required)
        status = SERVING if overall else NOT_SERVING
        await self._health.set("", status)
        for _, _, service_name in self._app.services:
            await self._health.set(service_name, status)
        return overall

    async def run_forever(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval_s)


async def serve(app: App, settings: ServiceSettings, stop: asyncio.Event | None = None) -> None:
    """Run the gRPC server until `stop` is set (or SIGTERM/SIGINT), then drain and shut down."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),  # a second instance on the same port must fail, not share it
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    credentials, interceptors = _security(app, settings)
    server = grpc.aio.server(interceptors=interceptors, options=options)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    for add, servicer, service_name in app.services:
        add(servicer, server)
        names.append(service_name)
    reflection.enable_server_reflection(names, server)
    address = f"{settings.host}:{settings.port}"
    port = (
        server.add_insecure_port(address)
        if credentials is None
        else server.add_secure_port(address, credentials)
    )
    if port == 0:
        raise RuntimeError(f"cannot bind {settings.host}:{settings.port}")

    metrics_port = None
    if settings.metrics_port is not None:
        metrics_port = start_metrics_server(settings.metrics_host, settings.metrics_port)

    health_server = _health_only_server(health, settings)

    await health.set(LIVENESS, SERVING)
    monitor = ReadinessMonitor(health, app, settings.health_interval_s)
    await monitor.check_once()  # health is accurate before the first call can arrive
    await server.start()
    if health_server is not None:
        await health_server[0].start()
    log.info(
        "listening",
        host=settings.host,
        port=port,
        metrics_port=metrics_port,
        health_port=None if health_server is None else health_server[1],
        services=names[2:],
        tls=_tls_mode(settings, credentials),
    )
    monitor_task = asyncio.create_task(monitor.run_forever())

    await stop.wait()
    log.info("shutting down", grace_s=settings.shutdown_grace_s)
    monitor_task.cancel()
    # Report NOT_SERVING first so load balancers stop routing here, then drain in-flight calls.
    await health.enter_graceful_shutdown()
    if app.on_drain is not None:
        app.on_drain()
    await server.stop(settings.shutdown_grace_s)
    if health_server is not None:
        await health_server[0].stop(0)
    if app.on_stop is not None:
        await app.on_stop()
    log.info("stopped")


def _health_only_server(
    health: HealthServicer, settings: ServiceSettings
) -> tuple[grpc.aio.Server, int] | None:
    """The plaintext health port, when configured: Kubernetes' gRPC probes cannot present a client
    certificate, so the mutual-TLS port cannot serve them. It shares the main port's health servicer
    (same statuses, NOT_SERVING first on shutdown) and serves nothing else, so it reveals no more
    than a health status."""
    if settings.health_port is None:
        return None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.health_port}")
    if port == 0:
        raise RuntimeError(f"cannot bind the health port {settings.host}:{settings.health_port}")
    return server, port


def _security(
    app: App, settings: ServiceSettings
) -> tuple[grpc.ServerCredentials | None, list[grpc.aio.ServerInterceptor]]:
    """How the port is served. A client-facing service (its settings include PublicTlsSettings: the
    gateway) authenticates callers itself and serves plaintext or one-way TLS. An internal service
    serves mutual TLS when `tls_dir` is set and authorises each caller's identity per method."""
    interceptors: list[grpc.aio.ServerInterceptor] = [ServerInterceptor()]
    if isinstance(settings, PublicTlsSettings):
        return tls.public_server_credentials(settings), interceptors
    files = tls.cert_files(settings, app.name)
    if files is None:
        return None, interceptors
    interceptors.append(AuthorizationInterceptor(CallerPolicy(settings.allowed_callers)))
    return tls.mutual_server_credentials(files), interceptors


def _tls_mode(settings: ServiceSettings, credentials: grpc.ServerCredentials | None) -> str:
    if credentials is None:
        return "off"
    return "one-way" if isinstance(settings, PublicTlsSettings) else "mutual"


S = TypeVar("S", bound=ServiceSettings)


def run(build: Callable[[S], Awaitable[App]], settings_cls: type[S], name: str) -> None:
    """Process entry point: read settings from the environment, configure logging, serve."""
    settings = settings_cls()
    configure_logging(settings.log_level, settings.log_format, service=name)

    async def main() -> None:
        app = await build(settings)
        # What startup built (models, clients, settings, caches' machinery) lives as long as the
        # process: frozen out of the collector, a full collection walks only what requests made since.
        gc.freeze()
        # Each call a service makes to another leaves a reference cycle (grpc.aio's call objects,
        # tenacity's retry state), so the youngest generation fills with cycles on every request:
        # collected every 5,000 net allocations instead of 700, far fewer collections walk the live
        # objects of the requests in flight, and fewer of those are promoted to be walked again. The
        # price: that cyclic garbage (with the responses it holds) waits a little longer to be freed.
        gc.set_threshold(5_000, 10, 10)
        await serve(app, settings)

    loop_factory = None
    if settings.use_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:  # optional: plain asyncio works, only slower
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
