"""Each service starts as its own process on its embedded defaults, reports health, lists its
services by reflection, and exits cleanly (code 0) on SIGTERM."""

from __future__ import annotations

import signal
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.service_process import ServiceProcess


@pytest.mark.parametrize(
    ("module", "service_name"),
    [
        ("services.encoder", "imagesearch.v1.EncoderService"),
        ("services.search", "imagesearch.v1.SearchService"),
        ("services.gateway", "imagesearch.v1.GatewayService"),
    ],
)
def test_service_lifecycle(module: str, service_name: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"IMAGESEARCH_SEARCH_DATA_DIR": str(tmp_path / "search")}
    # The gateway is healthy only when its backends are; lifecycle is tested without them.
    svc = ServiceProcess(module, env=env, wait_serving=module != "services.gateway").start()
    try:
        with grpc.insecure_channel(svc.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            overall = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            if module != "services.gateway":
                assert overall.status == health_pb2.HealthCheckResponse.SERVING
            named = health.Check(health_pb2.HealthCheckRequest(service=service_name), timeout=5)
            assert named.status == overall.status

            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            listed = {s.name for reply in replies for s in reply.list_services_response.service}
            assert {service_name, "grpc.health.v1.Health"} <= listed
    finally:
        started = time.monotonic()
        code = svc.stop(signal.SIGTERM)
        elapsed = time.monotonic() - started
    assert code == 0, svc.logs()
    assert elapsed < 15, f"shutdown took {elapsed:.1f}s"
    assert '"event": "stopped"' in svc.logs()
