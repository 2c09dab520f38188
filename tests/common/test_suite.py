"""`make run` (python -m services.suite) brings up all three services wired together over mutual TLS
(certificates made on first start) and the web console in front of them, and stops them all cleanly on
SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.tls import CertFiles, client_credentials
from tests.service_process import REPO_ROOT, free_port


def test_suite_starts_all_services_and_stops_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ports = {name: free_port() for name in ("ENCODER", "SEARCH", "GATEWAY")}
    certs = tmp_path / "certs"
    env = {
        **os.environ,
        "IMAGESEARCH_SEARCH_DATA_DIR": str(tmp_path / "search"),
        "IMAGESEARCH_SUITE_TLS_DIR": str(certs),
    }
    for name, port in ports.items():
        env[f"IMAGESEARCH_{name}_PORT"] = str(port)
        env[f"IMAGESEARCH_{name}_METRICS_PORT"] = "0"
    env["IMAGESEARCH_GATEWAY_ENCODER_ADDRESS"] = f"127.0.0.1:{ports['ENCODER']}"
    env["IMAGESEARCH_GATEWAY_SEARCH_ADDRESS"] = f"127.0.0.1:{ports['SEARCH']}"
    console_port = free_port()
    env["IMAGESEARCH_CONSOLE_LISTEN_ADDRESS"] = f"127.0.0.1:{console_port}"
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
        assert (certs / "ca.crt").exists() and (certs / "gateway.key").exists()
        assert f"console ready on http://127.0.0.1:{console_port}" in log.read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{console_port}/healthz", timeout=5) as reply:
            assert reply.status == 200
        operator = client_credentials(CertFiles.in_dir(certs, "operator"))
        for name, port in ports.items():
            address = f"127.0.0.1:{port}"
            # The gateway's public port is plaintext; the internal ones take only suite certificates.
            public = name == "GATEWAY"
            channel = grpc.insecure_channel(address) if public else grpc.secure_channel(address, operator)
            with channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
            if name != "GATEWAY":
                with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as err:
                    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, name
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, log.read_text()
    for name, port in [*ports.items(), ("CONSOLE", console_port)]:  # nothing left listening
        with socket.socket() as probe:
            assert (
                probe.connect_ex(("127.0.0.1", port)) != 0
            ), f"{name} still listening after the suite stopped"


def test_suite_replicas_get_their_own_ports_and_the_gateway_lists_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services import suite

    monkeypatch.setenv("IMAGESEARCH_SUITE_ENCODER_REPLICAS", "2")
    monkeypatch.setenv("IMAGESEARCH_ENCODER_PORT", "41000")
    monkeypatch.setenv("IMAGESEARCH_ENCODER_METRICS_PORT", "0")
    second = suite._env_for("encoder", 1)
    assert (second["IMAGESEARCH_ENCODER_PORT"], second["IMAGESEARCH_ENCODER_METRICS_PORT"]) == ("41100", "0")
    gateway = suite._env_for("gateway")
    assert gateway["IMAGESEARCH_GATEWAY_ENCODER_ADDRESS"] == f"{suite.HOST}:41000,{suite.HOST}:41100"
    assert gateway["IMAGESEARCH_GATEWAY_SEARCH_ADDRESS"] == f"{suite.HOST}:50072"


def test_search_replicas_need_a_shared_index(monkeypatch: pytest.MonkeyPatch) -> None:
    from services import suite

    monkeypatch.setenv("IMAGESEARCH_SUITE_SEARCH_REPLICAS", "2")
    monkeypatch.delenv("IMAGESEARCH_SEARCH_BACKEND", raising=False)
    with pytest.raises(SystemExit, match="IMAGESEARCH_SEARCH_BACKEND=weaviate"):
        suite._env_for("gateway")
