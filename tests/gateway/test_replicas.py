"""Two replicas each of the encoder and the search service behind one gateway (client-side round robin
with health checks, over mutual TLS), on the real stack: kill -9 of one replica of each during a search
load fails no search that started after the kill, and the replicas take calls again once they return.

The figures (calls, failures, p50/p99 before, during and after the outage) are printed; docs/SCALING.md
quotes a run."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2

from tests.gateway.suite import Suite, missing_prerequisites, open_data_sample
from tests.service_process import ServiceProcess

pytestmark = pytest.mark.integration

ALICE = [("authorization", "Bearer acme-alice")]
WORKERS = 4
PHASE_S = 6.0


@pytest.fixture(scope="module")
def suite(stack: object, suite_certs: Path) -> Iterator[Suite]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    # No gateway page cache: every search reaches an encoder and a search replica.
    gateway_env = {"IMAGESEARCH_GATEWAY_PAGE_CACHE_ENTRIES": "0"}
    s = Suite("stack", stack, gateway_env=gateway_env, tls_dir=suite_certs, replicas=2).start()
    try:
        yield s
    finally:
        s.stop()


@dataclass
class Call:
    start: float
    end: float
    code: grpc.StatusCode


def _handled(proc: ServiceProcess, method: str) -> float:
    """Calls of `method` this process has answered (its Prometheus counter; 0 after a restart)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    pattern = rf'grpc_server_handled_total\{{[^}}]*grpc_method="{method}"[^}}]*\}} ([0-9.e+]+)'
    return sum(float(v) for v in re.findall(pattern, text))


def _load(suite: Suite, stop: threading.Event, calls: list[Call]) -> list[threading.Thread]:
    def worker(n: int) -> None:
        stub = suite.gateway_stub()
        i = 0
        while not stop.is_set():
            i += 1
            # A new text each time: no cache answers, every call needs an encoder and a search replica.
            request = gateway_pb2.SearchRequest(text=f"a friendly animal {n}-{i}", page_size=5)
            start = time.monotonic()
            try:
                stub.Search(request, metadata=ALICE, timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            calls.append(Call(start, time.monotonic(), code))

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(WORKERS)]
    for t in threads:
        t.start()
    return threads


def _p(calls: list[Call], q: float) -> float:
    return float(np.percentile([(c.end - c.start) * 1000 for c in calls], q)) if calls else float("nan")


def test_kill_9_of_one_replica_of_each_fails_no_later_search_and_it_rejoins(suite: Suite) -> None:
    stub = suite.gateway_stub()
    items = open_data_sample(groups=4, extra=0)
    requests = [
        gateway_pb2.IngestRequest(
            asset_id=i.asset_id, image=i.data, caption=i.caption, license=common_pb2.License(name=i.license)
        )
        for i in items
    ]
    acks = list(stub.Ingest(iter(requests), metadata=ALICE, timeout=300))
    assert len(acks) == len(items)

    calls: list[Call] = []
    stop = threading.Event()
    threads = _load(suite, stop, calls)
    encoder, search = suite.encoders[1], suite.searches[1]
    try:
        time.sleep(PHASE_S)
        before_kill = _handled(search, "Query"), _handled(encoder, "EncodeTexts")
        killed_at = time.monotonic()
        for proc in (encoder, search):
            assert proc.proc is not None
            proc.proc.send_signal(signal.SIGKILL)
        time.sleep(PHASE_S)
        encoder.start(timeout_s=120)  # same ports: the gateway's static list finds them again
        search.start(timeout_s=120)
        back_at = time.monotonic()
        time.sleep(PHASE_S)
        # The gateway finds them again within its reconnect backoff and health checks: keep the load on
        # until both have taken calls (bounded; the assertions below say if they never did).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            _handled(search, "Query") > 0 and _handled(encoder, "EncodeTexts") > 0
        ):
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)

    failed = [c for c in calls if c.code != grpc.StatusCode.OK]
    late_failures = [c for c in failed if c.start > killed_at]
    phases = {
        "before": [c for c in calls if c.end <= killed_at],
        "outage": [c for c in calls if killed_at < c.start and c.end <= back_at],
        "after": [c for c in calls if c.start > back_at],
    }
    print(
        f"\nreplicas: {len(calls)} searches by {WORKERS} workers, {len(failed)} failed "
        f"({len(late_failures)} started after the kill); codes {sorted({c.code.name for c in failed})}"
    )
    for name, phase in phases.items():
        seconds = (max(c.end for c in phase) - min(c.start for c in phase)) if phase else 0
        print(
            f"  {name:7s} {len(phase):5d} calls  {len(phase) / max(seconds, 1e-9):6.1f}/s  "
            f"p50 {_p(phase, 50):7.1f} ms  p99 {_p(phase, 99):7.1f} ms"
        )
    print(f"  killed replicas had answered {before_kill[0]:.0f} Query / {before_kill[1]:.0f} EncodeTexts")

    assert before_kill[0] > 0 and before_kill[1] > 0  # both replicas were taking calls before the kill
    assert not late_failures, f"searches that started after the kill failed: {late_failures[:5]}"
    assert phases["outage"] and phases["after"]
    # The restarted processes (fresh counters) took calls again.
    assert _handled(search, "Query") > 0
    assert _handled(encoder, "EncodeTexts") > 0
