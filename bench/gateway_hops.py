#!/usr/bin/env python3
"""An uncached text search against the sum of its hops, with the floor of a gateway that does
nothing but those hops, every figure from the same rounds (issue #19 part 3).

    .venv/bin/python -m bench.gateway_hops --quick     # 1 round, ~3 min on 2 cores
    .venv/bin/python -m bench.gateway_hops --rounds 3

Starts its own suite (encoder, search, gateway on embedded defaults, free loopback ports), ingests
real images through the gateway, captures one search page, then starts bench/echo_server.py as a
*relay*: its GatewayService/Search calls EncodeTexts and a hybrid Query (window 100, vectors
included, search cache skipped) exactly as the hops are measured alone, then answers with the
captured page. Per round, one call at a time (ghz c1, ghz on core 1, the servers unpinned as in
perf_report.py's F section), in this order:

- `encoder.encode_text_c1` and `search.first_stage_c1`: the hops alone (the same texts every round:
  neither caches them);
- `echo.relay_search_c1`: the relay: grpc.aio's own cost of one served call and two client calls;
- `gateway.search_text_c1`: the gateway, on texts it has not seen (a new slice each round, so
  neither its page cache nor its query vectors cache answers).

Prints each mean and p50, and the relay's and the gateway's mean over the sum of the hops' means:
the target is the gateway at <= 1.3x; the relay shows how much of that any Python grpc.aio gateway
on this machine pays before doing any work. Writes the ghz summaries and report.json under --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.gateway_cache import PAGE_FILE, capture_page
from bench.perf_report import PY, REPO, EchoServer, loadavg, own_suite, seed_gateway

TARGET_RATIO = 1.3  # issue #19: uncached text search mean <= 1.3x the sum of its hops measured alone
QUERIES = 100  # per scenario and round
SUITE = REPO / "bench/ghz/perf_suite.json"


def scenarios(suite: dict[str, Any], round_no: int) -> list[dict[str, Any]]:
    """This round's four c1 scenarios, taken from bench/ghz/perf_suite.json (the hops as perf_report.py
    measures them alone, and its uncached gateway search) with QUERIES calls each: the hops and the
    relay on the first QUERIES texts, the gateway on a slice of its own per round."""
    by_name = {s["name"]: s for s in suite["scenarios"]}

    def c1(source: str, skip: int, **override: Any) -> dict[str, Any]:
        scenario = copy.deepcopy(by_name[source])
        scenario["data"].update(queries=QUERIES, skip=skip)
        scenario.update(distinct=True, warmup=False, total=QUERIES, max_duration_s=60, **override)
        return scenario

    return [
        c1("encoder.encode_text_c1", 0),
        c1("search.first_stage_c1", 0),
        c1("gateway.search_text_c1", 0, name="echo.relay_search_c1", target="echo", needs=["echo_page"]),
        c1("gateway.search_text_c1", QUERIES * (round_no + 1)),
    ]


def ghz_round(procs: dict[str, Any], relay: EchoServer, round_no: int, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    perf_suite = json.loads(SUITE.read_text())
    suite = out / "suite.json"
    own = {"profiles": perf_suite["profiles"], "scenarios": scenarios(perf_suite, round_no)}
    suite.write_text(json.dumps(own, indent=1))
    cmd = [
        PY, "-m", "bench.ghz.run", "--suite", str(suite), "--profile", "full",
        "--encoder", procs["encoder"].address, "--search", procs["search"].address,
        "--gateway", procs["gateway"].address, "--echo", relay.address, "--echo-page",
        "--api-key", "demo-key", "--cpus", "1", "--ghz-cpu-list", "1", "--budget-s", "600",
        "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "summary.json").read_text())
    return {s["name"]: s for s in summary["scenarios"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 32 seeded images")
    ap.add_argument("--rounds", type=int, default=3, help="at most 5 (the workload's distinct texts)")
    ap.add_argument("--images", type=int, default=96, help="seeded images (the window holds up to 100)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    rounds, images = (1, 32) if args.quick else (min(5, args.rounds), args.images)
    out = args.out or REPO / "bench/results" / time.strftime("gateway-hops-%Y%m%dT%H%M%S", time.gmtime())
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"loadavg_start": loadavg(), "rounds": []}
    with tempfile.TemporaryDirectory(prefix="gateway-hops-") as tmp, own_suite(Path(tmp)) as procs:
        report["seeded"] = seed_gateway(procs["gateway"].address, images, procs["search"].address)
        report["page_bytes"] = capture_page(procs["gateway"].address, Path(tmp) / PAGE_FILE)
        relay = EchoServer(
            uvloop=True,
            page_file=Path(tmp) / PAGE_FILE,
            relay=(procs["encoder"].address, procs["search"].address),
        )
        try:
            for r in range(rounds):
                got = ghz_round(procs, relay, r, out / f"round{r}")
                row = {name: {k: s["latency_ms"][k] for k in ("mean", "p50")} for name, s in got.items()}
                hops = row["encoder.encode_text_c1"]["mean"] + row["search.first_stage_c1"]["mean"]
                row["hops_mean_ms"] = hops
                row["relay_x_hops"] = round(row["echo.relay_search_c1"]["mean"] / hops, 3)
                row["gateway_x_hops"] = round(row["gateway.search_text_c1"]["mean"] / hops, 3)
                report["rounds"].append(row)
        finally:
            relay.stop()
    report["loadavg_end"] = loadavg()
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"ghz c1 on core 1, {QUERIES} calls per scenario and round; load average "
          f"{report['loadavg_start']} -> {report['loadavg_end']}; {out}")  # fmt: skip
    print(f"{'round':>5} {'encode':>8} {'query':>8} {'hops':>8} {'relay':>8} {'gateway':>8} "
          f"{'relay x':>8} {'gateway x':>9}   (mean ms; p50 in report.json)")  # fmt: skip
    names = ("encoder.encode_text_c1", "search.first_stage_c1", None, "echo.relay_search_c1",
             "gateway.search_text_c1")  # fmt: skip
    for r, row in enumerate(report["rounds"]):
        means = [row["hops_mean_ms"] if n is None else row[n]["mean"] for n in names]
        cells = " ".join(f"{m:8.2f}" for m in means)
        print(f"{r:>5} {cells} {row['relay_x_hops']:8.2f} {row['gateway_x_hops']:9.2f}")
    print(
        f"target: gateway <= {TARGET_RATIO}x the hops; relay: a server that makes the same two calls and "
        "answers with a stored page, doing nothing else (the floor of any grpc.aio gateway here)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
