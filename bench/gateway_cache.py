#!/usr/bin/env python3
"""Cached gateway search on one server core against the echo server, with and without the index
generation watch, every figure against a baseline from the same run (issue #19 part 1).

    .venv/bin/python -m bench.gateway_cache --quick      # ~2 min on 2 cores
    .venv/bin/python -m bench.gateway_cache --rounds 3   # longer, steadier
    mkdir /tmp/base && git archive main | tar -x -C /tmp/base
    .venv/bin/python -m bench.gateway_cache --quick --baseline-tree /tmp/base   # + main's gateway
    .venv/bin/python -m bench.gateway_cache --quick --baseline-tree /tmp/base --baseline-watch --thread-cpu

Starts its own processes (free loopback ports, log level info): the echo server (bench/echo_server.py,
uvloop), the encoder (ONNX Runtime), the search service (embedded backend, memory cache) and the
gateways on that search service: `watch` (generations pushed: a hit makes no call), `read` (the
watch off: every hit reads the generation with GetIndexGeneration, as before issue #19) and, with
--baseline-tree, `base` (an earlier checkout's gateway: the plumbing before issue #19). Seeds the
tenant through a gateway, pins every server thread to core 0 and ghz to core 1 (`--cpus 1`), then
runs, per round and in turn, bench/ghz/run.py's `echo.health`, `echo.search_page` (the echo server
answering with a real cached page captured from the gateway: no work, same response bytes),
`gateway.health` and `gateway.search_text_hot` (10 hot queries, page cache warmed) against each
gateway. Prints per round: rps, p50, p99, each search's rps over the echo server's from the same
round, calls per server CPU-second (echo + gateway + search processes, from /proc), steadier on a
shared machine, and ghz's own CPU over its core: where it nears 1.00 the rps is the load generator's
ceiling, not the server's. Writes the ghz summaries and a report.json under --out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.perf_report import PY, REPO, EchoServer, loadavg, pin, seed_gateway

TARGET_RATIO = 0.5  # issue #19: cached gateway search >= 0.5x the echo server's rps on one core
TARGET_P99_MS = 10.0
PAGE_FILE = "cached-page.bin"  # a real cached page, served by the echo server as `echo.search_page`


def capture_page(address: str, page_file: Path) -> int:
    """One hot query's cached page as the gateway sends it (the first of the hot scenario's queries,
    page size 20), written for the echo server: a zero-work server answering with the same bytes."""
    import grpc
    from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

    from bench.ghz import workload
    from bench.perf_report import API_KEY

    request = gateway_pb2.SearchRequest(text=workload.load_queries(1)[0], page_size=20)
    with grpc.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for _ in range(2):  # the second is a page-cache hit
            page = stub.Search(request, metadata=(("authorization", f"Bearer {API_KEY}"),), timeout=30)
    page_file.write_bytes(page.SerializeToString())
    return page_file.stat().st_size


@contextlib.contextmanager
def servers(
    data_dir: Path, baseline_tree: Path | None, baseline_watch: bool = False
) -> Iterator[dict[str, Any]]:
    """echo, encoder, search, and the gateways (`watch`, `read`, and `base` from `baseline_tree`) on
    that search service."""
    from tests.service_process import ServiceProcess

    procs: dict[str, Any] = {}
    info = {"LOG_LEVEL": "info", "LOG_FORMAT": "json"}

    def env(name: str, extra: dict[str, str]) -> dict[str, str]:
        return {**{f"IMAGESEARCH_{name.upper()}_{k}": v for k, v in info.items()}, **extra}

    echo = EchoServer(uvloop=True, page_file=data_dir / PAGE_FILE)
    try:
        procs["encoder"] = ServiceProcess("services.encoder", env("encoder", {})).start(timeout_s=180)
        procs["search"] = ServiceProcess(
            "services.search",
            env(
                "search", {"IMAGESEARCH_SEARCH_DATA_DIR": str(data_dir), "IMAGESEARCH_SEARCH_CACHE": "memory"}
            ),
        ).start(timeout_s=180)
        gateways: list[tuple[str, str, Path | None]] = [("watch", "true", None), ("read", "false", None)]
        if baseline_tree is not None:
            gateways.append(("base", "true" if baseline_watch else "false", baseline_tree))
        for name, watch, tree in gateways:
            procs[name] = ServiceProcess(
                "services.gateway",
                env(
                    "gateway",
                    {
                        "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": procs["encoder"].address,
                        "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": procs["search"].address,
                        "IMAGESEARCH_GATEWAY_API_KEYS_FILE": str(REPO / "services/gateway/demo_keys.json"),
                        "IMAGESEARCH_GATEWAY_GENERATION_WATCH": watch,
                        # the baseline's own generated code (its protos may differ)
                        **({"PYTHONPATH": str(tree / "gen/python")} if tree is not None else {}),
                    },
                ),
                source_tree=tree,
            ).start(timeout_s=180)
        procs["echo"] = echo
        yield procs
    finally:
        for name in ("base", "watch", "read", "search", "encoder"):
            if name in procs:
                procs[name].stop()
        echo.stop()


def ghz_round(procs: dict[str, Any], gateway: str, out: Path, budget_s: float) -> dict[str, Any]:
    """bench/ghz/run.py's echo.health and gateway.search_text_hot, ghz pinned to core 1."""
    cmd = [
        PY, "-m", "bench.ghz.run", "--suite", str(REPO / "bench/ghz/perf_suite.json"), "--profile", "quick",
        "--echo", procs["echo"].address, "--gateway", procs[gateway].address, "--api-key", "demo-key",
        "--only", "echo.health", "--only", "echo.search_page", "--echo-page",
        "--only", "gateway.health", "--only", "gateway.search_text_hot",
        "--cpus", "1", "--ghz-cpu-list", "1", "--budget-s", str(budget_s), "--out", str(out),
        "--watch-pid", f"echo={procs['echo'].proc.pid}", "--watch-pid", f"gateway={procs[gateway].proc.pid}",
        "--watch-pid", f"search={procs['search'].proc.pid}",
    ]  # fmt: skip
    print(f"[gateway_cache] {shlex.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return {s["name"]: s for s in summary["scenarios"]}


def thread_cpu(pid: int) -> dict[int, tuple[str, int]]:
    """Per thread of `pid`: (name, user + system CPU in clock ticks), from /proc."""
    found: dict[int, tuple[str, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            found[int(tid)] = (name, int(fields[11]) + int(fields[12]))
    return found


def thread_split(procs: dict[str, Any], out: Path) -> dict[str, Any]:
    """The `watch` gateway's CPU per call, per thread, under `gateway.health` and then under
    `gateway.search_text_hot` (each alone, ghz on core 1): where a hit's CPU goes beyond the plumbing."""
    tick = os.sysconf("SC_CLK_TCK")
    pid = procs["watch"].proc.pid
    split: dict[str, Any] = {}
    for scenario in ("gateway.health", "gateway.search_text_hot"):
        before = thread_cpu(pid)
        cmd = [
            PY, "-m", "bench.ghz.run", "--suite", str(REPO / "bench/ghz/perf_suite.json"),
            "--profile", "quick", "--echo", procs["echo"].address, "--gateway", procs["watch"].address,
            "--api-key", "demo-key", "--only", scenario, "--cpus", "1", "--ghz-cpu-list", "1",
            "--budget-s", "60", "--out", str(out / f"threads-{scenario}"),
        ]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        after = thread_cpu(pid)
        summary = json.loads((out / f"threads-{scenario}" / "summary.json").read_text())
        calls = summary["scenarios"][0]["count"]
        used = sorted(
            ((t - before.get(tid, (name, 0))[1], tid, name) for tid, (name, t) in after.items()), reverse=True
        )
        total = sum(u for u, _, _ in used) or 1
        split[scenario] = {
            "calls": calls,
            "us_per_call": round(total / tick / max(1, calls) * 1e6, 1),
            "threads": [
                {
                    "tid": tid,
                    "name": name,
                    "us_per_call": round(u / tick / max(1, calls) * 1e6, 1),
                    "share": round(u / total, 3),
                }
                for u, tid, name in used
                if u
            ],
        }
    return split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 16 seeded images (~2 min)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--baseline-tree",
        type=Path,
        help="a checkout of earlier code (e.g. `git archive main | tar -x -C DIR`): its gateway runs as "
        "`base` on the same search service, the same-run baseline of the per-request plumbing",
    )
    ap.add_argument(
        "--baseline-watch",
        action="store_true",
        help="run `base` with the generation watch on (a baseline that has the watch: compares only the "
        "per-request work of a hit)",
    )
    ap.add_argument(
        "--thread-cpu",
        action="store_true",
        help="after the rounds, the `watch` gateway's CPU per call per thread under Health/Check and "
        "under the cached search (the main thread, grpc's poller, the worker threads)",
    )
    args = ap.parse_args()
    rounds, images = (1, 16) if args.quick else (args.rounds, args.images)
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs 2 cores: the servers on core 0, ghz on core 1")
    out = args.out or REPO / "bench/results" / time.strftime("gateway-cache-%Y%m%dT%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"loadavg_start": loadavg(), "rounds": []}
    with (
        tempfile.TemporaryDirectory(prefix="gateway-cache-") as tmp,
        servers(Path(tmp), args.baseline_tree, args.baseline_watch) as procs,
    ):
        report["seeded"] = seed_gateway(procs["watch"].address, images, procs["search"].address)
        report["page_bytes"] = capture_page(procs["watch"].address, Path(tmp) / PAGE_FILE)
        threads = sum(pin(p.proc.pid, {0}) for p in procs.values())
        report["pinned_threads"] = threads
        for r in range(rounds):
            row: dict[str, Any] = {}
            for gateway in [g for g in ("base", "read", "watch") if g in procs]:
                got = ghz_round(procs, gateway, out / f"round{r}-{gateway}", budget_s=120)
                echo, health, hot = got["echo.health"], got["gateway.health"], got["gateway.search_text_hot"]
                page = got["echo.search_page"]
                echo_per_cpu = echo.get("calls_per_server_cpu_s") or 0
                row[gateway] = {
                    "echo_rps": echo["rps"],
                    "echo_p99_ms": echo["latency_ms"]["p99"],
                    "echo_calls_per_cpu_s": echo_per_cpu,
                    "health_rps": health["rps"],
                    "health_calls_per_cpu_s": health.get("calls_per_server_cpu_s"),
                    "search_rps": hot["rps"],
                    "search_p50_ms": hot["latency_ms"]["p50"],
                    "search_p99_ms": hot["latency_ms"]["p99"],
                    "search_calls_per_cpu_s": hot.get("calls_per_server_cpu_s"),
                    "unexpected": hot["unexpected"],
                    # ghz's CPU / its core: near 1 the load generator set the rps, not the server
                    "echo_client_cpu_share": echo.get("client_cpu_share"),
                    "search_client_cpu_share": hot.get("client_cpu_share"),
                    # the echo server answering the same page: the client's ceiling on that response
                    "page_rps": page["rps"],
                    "page_calls_per_cpu_s": page.get("calls_per_server_cpu_s"),
                    "page_client_cpu_share": page.get("client_cpu_share"),
                    "x_echo": round(hot["rps"] / echo["rps"], 3) if echo["rps"] else None,
                    "x_echo_per_cpu": round((hot.get("calls_per_server_cpu_s") or 0) / echo_per_cpu, 3)
                    if echo_per_cpu
                    else None,
                }
            report["rounds"].append(row)
        if args.thread_cpu:
            report["thread_cpu"] = thread_split(procs, out)
    report["loadavg_end"] = loadavg()
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"one server core (core 0), ghz on core 1, c=8; load average {report['loadavg_start']} -> "
          f"{report['loadavg_end']}; {out}")  # fmt: skip
    head = ("round", "gateway", "echo rps", "page rps", "search rps", "p50 ms", "p99 ms", "x echo", "x page")
    head2 = ("echo/CPU-s", "search/CPU-s", "x echo", "ghz busy")
    columns = "{:>5} {:6} {:>8} {:>8} {:>10} {:>6} {:>6} {:>6} {:>6} | {:>10} {:>12} {:>6} | {:>14}"
    print(columns.format(*head, *head2))
    for r, row in enumerate(report["rounds"]):
        for gateway, m in row.items():
            busy = "/".join(f"{m[k] or 0:.2f}" for k in ("echo_client_cpu_share", "page_client_cpu_share",
                                                          "search_client_cpu_share"))  # fmt: skip
            print(
                f"{r:>5} {gateway:6} {m['echo_rps']:8.0f} {m['page_rps']:8.0f} {m['search_rps']:10.0f} "
                f"{m['search_p50_ms']:6.2f} {m['search_p99_ms']:6.2f} {m['x_echo']:6.3f} "
                f"{m['search_rps'] / m['page_rps'] if m['page_rps'] else 0:6.3f} | "
                f"{m['echo_calls_per_cpu_s'] or 0:10.0f} {m['search_calls_per_cpu_s'] or 0:12.0f} "
                f"{m['x_echo_per_cpu'] or 0:6.3f} | {busy:>14}"
            )
    print(
        f"page rps: the echo server answering every search with the same cached page "
        f"({report['page_bytes']} bytes) and doing nothing else; ghz busy: the load generator's CPU over "
        "its core (echo health / echo page / cached search): near 1.00 the rps is the client's ceiling "
        "(ghz decodes every response), not the server's; calls per server CPU-second do not depend on it"
    )

    for scenario, split in report.get("thread_cpu", {}).items():
        big = [t for t in split["threads"] if t["share"] >= 0.02]
        names = ", ".join(f"{t['name']}/{t['tid']} {t['us_per_call']:.0f} us" for t in big)
        print(f"watch gateway, {scenario}: {split['us_per_call']:.0f} us CPU per call ({names})")

    def total(gateway: str, key: str) -> float:
        return sum(row[gateway][key] or 0 for row in report["rounds"] if gateway in row)

    for other in [g for g in ("read", "base") if g in report["rounds"][0]]:
        rps = total("watch", "search_rps") / max(1.0, total(other, "search_rps"))
        per_cpu = total("watch", "search_calls_per_cpu_s") / max(1.0, total(other, "search_calls_per_cpu_s"))
        print(f"watch vs {other} (same rounds): {rps:.2f}x rps, {per_cpu:.2f}x calls per server CPU-second")
    watch = [row["watch"] for row in report["rounds"]]
    best = max(watch, key=lambda m: m["x_echo"] or 0)
    print(
        f"target {TARGET_RATIO}x echo at p99 < {TARGET_P99_MS} ms: best round {best['x_echo']}x echo rps "
        f"({best['x_echo_per_cpu']}x per server CPU-second), p99 {best['search_p99_ms']} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
