"""`make run` (python -m services.suite) brings up all three services wired together, and stops
them all cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.service_process import REPO_ROOT, free_port


def test_suite_starts_all_services_and_stops_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ports = {name: free_port() for name in ("ENCODER", "SEARCH", "GATEWAY")}
    env = {**os.environ, "IMAGESEARCH_SEARCH_DATA_DIR": str(tmp_path / "search")}
    for name, port in ports.items():
        env[f"IMAGESEARCH_{name}_PORT"] = str(port)
        env[f"IMAGESEARCH_{name}_METRICS_PORT"] = "0"
    env["IMAGESEARCH_GATEWAY_ENCODER_ADDRESS"] = f"127.0.0.1:{ports['ENCODER']}"
    env["IMAGESEARCH_GATEWAY_SEARCH_ADDRESS"] = f"127.0.0.1:{ports['SEARCH']}"
    log = tmp_path / "suite.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.suite"], cwd=REPO_ROOT, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 120
        while b"suite: ready" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        for name, port in ports.items():
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()
    for name, port in ports.items():  # nothing left listening
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=0.5)
                raise AssertionError(f"{name} still listening after the suite stopped")
            except grpc.FutureTimeoutError:
                pass
