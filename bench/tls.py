"""What mutual TLS costs on an internal hop: one search service process over plaintext and one over
mutual TLS (embedded backend, memory cache), the same cheap call (GetIndexGeneration) on each.

    .venv/bin/python -m bench.tls [--calls 2000] [--connections 50]

Reports, per transport: p50/p99 of one call on a warm channel (what the gateway's long-lived
channels pay) and of a fresh connection's first call (handshake included: what a reconnect pays).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from imagesearch.v1 import search_pb2, search_pb2_grpc

from services.common import certs
from tests.service_process import ServiceProcess


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms"


def _measure(open_channel: Callable[[], grpc.Channel], calls: int, connections: int) -> tuple[str, str]:
    request = search_pb2.GetIndexGenerationRequest(tenant="bench")
    with open_channel() as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for _ in range(200):  # warm up
            stub.GetIndexGeneration(request, timeout=5)
        warm = []
        for _ in range(calls):
            t0 = time.perf_counter()
            stub.GetIndexGeneration(request, timeout=5)
            warm.append(time.perf_counter() - t0)
    fresh = []
    for _ in range(connections):
        t0 = time.perf_counter()
        with open_channel() as channel:
            search_pb2_grpc.SearchServiceStub(channel).GetIndexGeneration(request, timeout=5)
        fresh.append(time.perf_counter() - t0)
    return _percentiles(warm), _percentiles(fresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    certs.init(tmp / "certs")
    env = {"IMAGESEARCH_SEARCH_CACHE": "memory", "IMAGESEARCH_SEARCH_LOG_LEVEL": "warning"}
    for label, tls_dir in (("plaintext", None), ("mutual TLS", tmp / "certs")):
        data = {"IMAGESEARCH_SEARCH_DATA_DIR": str(tmp / label.replace(" ", "-"))}
        with ServiceProcess("services.search", {**env, **data}, tls_dir=tls_dir) as svc:
            warm, fresh = _measure(functools.partial(svc.channel, "gateway"), args.calls, args.connections)
        print(f"{label:>10}: warm channel {warm}; new connection + first call {fresh}", flush=True)


if __name__ == "__main__":
    main()
