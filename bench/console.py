"""Console benchmark: server time of a search page with 50 results, with the gateway's own latency
beside it in the same run.

    python -m bench.console                 # make bench-console; ~2-3 min on 2 cores
    python -m bench.console --rounds 40 --assets 150

Starts the embedded suite (encoder on ONNX Runtime with the default model package, embedded index,
in-process cache) and the console as real processes on loopback, ingests `--assets` open-data images
(tests/gateway/suite.py's data cache) so every page has 50 results, signs in, then alternates, for each
round: one Search straight to the gateway over gRPC (page_size 50) and one GET /search?n=50 of the
console. Two query kinds: `repeat` (the same text every round: the gateway answers its first stage from
its cache) and `fresh` (a new text per call: nothing cached, the encoder runs). For the console it reads
the Server-Timing header: `app` (the console's whole handling time, template rendering included) and
`gateway` (the part spent waiting on the gateway). Figures: p50/p95 per series and the same-run ratio
console app / direct gateway. Writes bench/results/console-<utc>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.cookiejar
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from imagesearch.v1 import common_pb2, gateway_pb2

from bench.gateway import load_items
from tests.console.conftest import start_console
from tests.gateway.suite import Suite

REPO = Path(__file__).resolve().parents[1]
KEY = "acme-alice"  # tests/gateway/suite.py KEYRING
PAGE = 50
WORDS = ["cat", "dog", "car", "flower", "face", "tree", "house", "bird", "star", "fish", "boat", "hat"]


class DefaultPackageSuite(Suite):
    """The embedded suite on the encoder's default model package (what `make run` serves)."""

    def encoder_env(self) -> dict[str, str]:
        return {"IMAGESEARCH_ENCODER_BACKEND": "onnxruntime"}


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)), "n": len(ms)}


def sign_in(url: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = opener.open(f"{url}/login").read().decode()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF token on the sign-in page"
    body = urllib.parse.urlencode({"csrf": match.group(1), "api_key": KEY}).encode()
    reply = opener.open(f"{url}/login", data=body)
    assert reply.geturl().endswith("/search"), "sign-in failed"
    return opener


def server_timing(header: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\w+);dur=([\d.]+)", header)}


def console_search(
    opener: urllib.request.OpenerDirector, url: str, text: str
) -> tuple[float, dict[str, float], int]:
    query = urllib.parse.urlencode({"text": text, "n": PAGE})
    start = time.perf_counter()
    with opener.open(f"{url}/search?{query}") as reply:
        html = reply.read().decode()
        timing = server_timing(reply.headers["server-timing"])
    wall_ms = (time.perf_counter() - start) * 1000
    return wall_ms, timing, html.count('<li class="result">')


def gateway_search(stub: Any, text: str) -> tuple[float, int]:
    start = time.perf_counter()
    reply = stub.Search(
        gateway_pb2.SearchRequest(text=text, page_size=PAGE),
        metadata=[("authorization", f"Bearer {KEY}")],
        timeout=30,
    )
    return (time.perf_counter() - start) * 1000, len(reply.results)


def run(rounds: int, assets: int) -> dict[str, Any]:
    suite = DefaultPackageSuite("embedded").start()
    console: subprocess.Popen[bytes] | None = None
    try:
        stub = suite.gateway_stub()
        items = load_items(assets)
        requests = [
            gateway_pb2.IngestRequest(asset_id=a, image=b, caption=c, license=common_pb2.License(name="MIT"))
            for a, b, c in items
        ]
        t0 = time.perf_counter()
        acks = list(stub.Ingest(iter(requests), metadata=[("authorization", f"Bearer {KEY}")], timeout=900))
        print(f"ingested {len(acks)} assets in {time.perf_counter() - t0:.0f}s", flush=True)
        assert suite.gateway is not None
        log = Path(suite.tmp) / "console.log"
        console, url = start_console(suite.gateway.address, log)
        opener = sign_in(url)
        for i in range(5):  # warm up both paths (connections, template compilation, caches)
            console_search(opener, url, f"warm {WORDS[i]}")
            gateway_search(stub, f"warm {WORDS[i]}")
        series: dict[str, dict[str, list[float]]] = {}
        for kind in ("repeat", "fresh"):
            s: dict[str, list[float]] = {
                "gateway_direct": [],
                "console_app": [],
                "console_gateway": [],
                "console_render": [],
                "console_wall": [],
            }
            for r in range(rounds):
                word = WORDS[r % len(WORDS)]
                g_text = "a smiling face" if kind == "repeat" else f"{word} {r} direct"
                c_text = "a smiling face" if kind == "repeat" else f"{word} {r} console"
                g_ms, g_n = gateway_search(stub, g_text)
                c_wall, timing, c_n = console_search(opener, url, c_text)
                assert g_n == PAGE and c_n == PAGE, (g_n, c_n)
                s["gateway_direct"].append(g_ms)
                s["console_app"].append(timing["app"])
                s["console_gateway"].append(timing["gateway"])
                s["console_render"].append(timing["app"] - timing["gateway"])
                s["console_wall"].append(c_wall)
            series[kind] = s
        result: dict[str, Any] = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "assets": len(acks),
            "rounds": rounds,
            "page_size": PAGE,
            "target_console_app_p50_ms": 300,
        }
        for kind, s in series.items():
            figures: dict[str, Any] = {name: percentiles(values) for name, values in s.items()}
            figures["ratio_console_app_over_gateway_direct_p50"] = (
                figures["console_app"]["p50_ms"] / figures["gateway_direct"]["p50_ms"]
            )
            result[kind] = figures
        return result
    finally:
        if console is not None:
            console.terminate()
            console.wait(20)
        suite.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--assets", type=int, default=120)
    args = parser.parse_args()
    result = run(args.rounds, args.assets)
    for kind in ("repeat", "fresh"):
        f = result[kind]

        def p(series: str, q: str = "p50_ms", f: dict[str, Any] = f) -> str:
            return f"{f[series][q]:.1f}"

        print(
            f"{kind:>6}: console app p50 {p('console_app')} ms p95 {p('console_app', 'p95_ms')} ms "
            f"(waiting on gateway p50 {p('console_gateway')}, render+rest p50 {p('console_render')}); "
            f"gateway direct p50 {p('gateway_direct')} ms p95 {p('gateway_direct', 'p95_ms')} ms; "
            f"ratio console/gateway p50 {f['ratio_console_app_over_gateway_direct_p50']:.2f}"
        )
    out = REPO / "bench" / "results" / f"console-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
