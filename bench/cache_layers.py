#!/usr/bin/env python3
"""Do both cache layers pay? The gateway's page cache against the search service's result cache
(issue #19: "one cache layer where two exist today, unless measurement shows both pay").

    .venv/bin/python -m bench.cache_layers --quick     # ~1 min on 2 cores

A gateway page miss whose first stage the search service has already answered is what only the
result cache serves: the next page of a query (the gateway caches pages by offset, the search
service caches the reranked window once), another page size, or another gateway replica. This runs
two suites that differ only in the search service's cache (`memory` against `none`: the same-run
baseline), seeds each, and times, per query at concurrency 1: page 1 (both layers miss), page 2 via
its token (a page-cache miss; a result-cache hit when that layer exists), page 1 again (a page-cache
hit). Prints the p50 of each and the ratio of page 2 with the result cache over page 2 without it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

from bench.ghz import workload
from bench.perf_report import API_KEY, REPO, loadavg, seed_gateway

MD = (("authorization", f"Bearer {API_KEY}"),)


@contextmanager
def suite(data_dir: Path, search_cache: str) -> Iterator[str]:
    """encoder + search (embedded, `search_cache`) + gateway; yields the gateway's address."""
    from tests.service_process import ServiceProcess

    procs: list[Any] = []
    try:
        encoder = ServiceProcess("services.encoder", {"IMAGESEARCH_ENCODER_LOG_LEVEL": "info"}).start(180)
        procs.append(encoder)
        search = ServiceProcess(
            "services.search",
            {
                "IMAGESEARCH_SEARCH_LOG_LEVEL": "info",
                "IMAGESEARCH_SEARCH_DATA_DIR": str(data_dir),
                "IMAGESEARCH_SEARCH_CACHE": search_cache,
            },
        ).start(180)
        procs.append(search)
        gateway = ServiceProcess(
            "services.gateway",
            {
                "IMAGESEARCH_GATEWAY_LOG_LEVEL": "info",
                "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": encoder.address,
                "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": search.address,
                "IMAGESEARCH_GATEWAY_API_KEYS_FILE": str(REPO / "services/gateway/demo_keys.json"),
            },
        ).start(180)
        procs.append(gateway)
        yield gateway.address
    finally:
        for p in reversed(procs):
            p.stop()


def timed(stub: Any, req: gateway_pb2.SearchRequest) -> tuple[float, Any]:
    start = time.perf_counter()
    resp = stub.Search(req, metadata=MD, timeout=30)
    return (time.perf_counter() - start) * 1000, resp


def measure(address: str, queries: list[str]) -> dict[str, float]:
    first, second, hit = [], [], []
    with grpc.insecure_channel(address) as ch:
        stub = gateway_pb2_grpc.GatewayServiceStub(ch)
        for q in queries:
            ms, page1 = timed(stub, gateway_pb2.SearchRequest(text=q, page_size=10))
            first.append(ms)
            if page1.next_page_token:
                ms, page2 = timed(
                    stub, gateway_pb2.SearchRequest(text=q, page_size=10, page_token=page1.next_page_token)
                )
                second.append(ms)
            ms, again = timed(stub, gateway_pb2.SearchRequest(text=q, page_size=10))
            assert again.cached
            hit.append(ms)
    return {
        "page1_p50_ms": round(statistics.median(first), 3),
        "page2_p50_ms": round(statistics.median(second), 3) if second else float("nan"),
        "page2_n": len(second),
        "hit_p50_ms": round(statistics.median(hit), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 images, 30 queries")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--queries", type=int, default=80)
    args = ap.parse_args()
    images, n = (16, 30) if args.quick else (args.images, args.queries)
    queries = workload.load_queries(n)
    results: dict[str, dict[str, float]] = {}
    print(f"load average at start {loadavg()}")
    for cache in ("none", "memory"):
        with tempfile.TemporaryDirectory(prefix="cache-layers-") as tmp, suite(Path(tmp), cache) as address:
            seed_gateway(address, images)
            results[cache] = measure(address, queries)
    print(f"load average at end {loadavg()}")
    print(f"{'search cache':12} {'page 1 p50 ms':>14} {'page 2 p50 ms':>14} {'page-cache hit p50 ms':>22}")
    for cache, r in results.items():
        print(f"{cache:12} {r['page1_p50_ms']:14.2f} {r['page2_p50_ms']:14.2f} {r['hit_p50_ms']:22.2f}")
    ratio = results["memory"]["page2_p50_ms"] / results["none"]["page2_p50_ms"]
    print(f"page 2 (a page-cache miss) with the result cache / without: {ratio:.2f}x "
          f"({results['memory']['page2_n']} queries had a second page)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
