#!/usr/bin/env python3
"""The measured performance report (docs/PERFORMANCE.md): every comparison of issue #6, each against a
baseline measured in the same run, in one bounded run.

    .venv/bin/python -m bench.perf_report --quick          # ~3-5 min on 2 cores: proves the plumbing
    .venv/bin/python -m bench.perf_report                  # the figures for docs/PERFORMANCE.md (<= 15 min)
    .venv/bin/python -m bench.perf_report --only ghz,one-core --out bench/results/perf-x

Steps (each bounded; a failed step is recorded and the others still run):
  ghz       starts its own suite (encoder on ONNX Runtime, embedded search with the memory cache, gateway
            with the demo keyring: services/suite.py's defaults, on free loopback ports, log level info)
            and two minimal echo servers (bench/echo_server.py, uvloop and plain asyncio); ingests real
            images through the gateway; runs bench/ghz/run.py with bench/ghz/perf_suite.json: the
            services' health checks against the echo server's (same call), the gateway's cached and
            uncached search against each of its hops, cached against uncached search-service queries
  one-core  the same servers pinned to core 0 (every thread: `taskset -a -p -c 0 PID`), ghz pinned to
            core 1 (`taskset -c 1 ghz --cpus 1`): echo, gateway health and the cached gateway search path
            (gateway + search + encoder all on the one core) against the target of 4,300 requests/s at
            p99 < 25 ms
  encoder   bench/encoder.py: the encoder service via Triton and embedded, against raw ONNX Runtime in
            process (with and without preprocessing), same cells back to back
  search    bench/search.py: Weaviate against the embedded backend at a modest --n, cached against
            uncached queries (in process and through gRPC, memory and Redis caches)
  gateway   bench/gateway.py: end-to-end search and ingest against their hops (EncodeTexts, Query,
            encoder-only ingest) measured in the same run

Writes under --out (default bench/results/perf-<UTC time>[-quick]):
  report.json          every figure, the comparison rows, load averages, versions, commands
  report.md            the comparison table (what docs/PERFORMANCE.md quotes) and the encoder detail
  comparisons.png      every ratio on one chart (needs matplotlib)
  ghz/, ghz-one-core/  run.py's summary.json + raw reports, render.py's results.md and PNGs
  encoder.json, search.json, gateway.json   the scripts' own JSON reports
  logs/<step>.log      each step's output
Prints the comparison table. Loopback only; nothing outside this machine is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.ghz import workload  # the real images and query texts
from bench.proctree import pin

REPO = Path(__file__).resolve().parents[1]

PY = sys.executable
API_KEY = "demo-key"  # services/gateway/demo_keys.json: tenant demo, search + ingest + delete
TARGET_RPS_PER_CORE = 4300  # issue #6 part 5: cached gateway search path, per server core
TARGET_P99_MS = 25.0
PUBLISHED_ECHO_RPS = 4305  # a published grpc.aio figure: trivial unary handler, one core
STEPS = ("ghz", "one-core", "encoder", "search", "gateway")

# Per profile: ingest count for the gateway's tenant, and each script's arguments.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "seed_images": 32,
        "ghz_profile": "quick",
        "encoder": ["--quick"],
        "search": ["--n", "1000", "--queries", "100", "--recall-queries", "20", "--index-budget-s", "60"],
        "gateway": ["--images", "16", "--queries", "40", "--concurrency", "4", "--max-seconds", "5"],
        "timeouts": {"ghz": 300, "one-core": 200, "encoder": 300, "search": 400, "gateway": 400},
    },
    "full": {
        "seed_images": 96,
        "ghz_profile": "full",
        "encoder": ["--batches", "1", "8", "32", "--concurrency", "1", "8", "--cell-seconds", "2"],
        "search": ["--n", "5000", "--queries", "300", "--recall-queries", "100", "--index-budget-s", "120"],
        "gateway": ["--images", "48", "--queries", "150", "--concurrency", "4", "--max-seconds", "15"],
        "timeouts": {"ghz": 420, "one-core": 300, "encoder": 420, "search": 600, "gateway": 600},
    },
}
ONE_CORE_SCENARIOS = ["echo.health", "gateway.health", "gateway.search_text_hot", "search.query_cached"]


def say(msg: str) -> None:
    print(f"[perf] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------------------------
# Processes: the suite, the echo servers, pinning


class EchoServer:
    def __init__(
        self, uvloop: bool, page_file: Path | None = None, relay: tuple[str, str] | None = None
    ) -> None:
        """`relay`: (encoder, search) addresses: its Search makes an uncached search's two hops first."""
        cmd = [PY, "-m", "bench.echo_server", "--port", "0"] + ([] if uvloop else ["--no-uvloop"])
        cmd += ["--page-file", str(page_file)] if page_file is not None else []
        cmd += ["--relay-encoder", relay[0], "--relay-search", relay[1]] if relay is not None else []
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"echo server did not start: {line}")
        self.address = line.split()[2]
        self.loop = line.split("(")[-1].rstrip(")\n")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def own_suite(data_dir: Path) -> Iterator[dict[str, Any]]:
    """encoder + search + gateway as services/suite.py runs them (embedded defaults), on free ports.

    Not the suite the lead may have on :50070-50072: its own processes, data directory and caches."""
    from tests.service_process import ServiceProcess

    procs: dict[str, Any] = {}
    common = {"LOG_LEVEL": "info", "LOG_FORMAT": "json"}  # ServiceProcess defaults to debug logging

    def env(name: str, extra: dict[str, str]) -> dict[str, str]:
        prefix = f"IMAGESEARCH_{name.upper()}_"
        return {**{prefix + k: v for k, v in common.items()}, **extra}

    try:
        procs["encoder"] = ServiceProcess("services.encoder", env("encoder", {})).start(timeout_s=180)
        procs["search"] = ServiceProcess(
            "services.search", env("search", {"IMAGESEARCH_SEARCH_DATA_DIR": str(data_dir / "search")})
        ).start(timeout_s=180)
        procs["gateway"] = ServiceProcess(
            "services.gateway",
            env(
                "gateway",
                {
                    "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": procs["encoder"].address,
                    "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": procs["search"].address,
                    "IMAGESEARCH_GATEWAY_API_KEYS_FILE": str(REPO / "services/gateway/demo_keys.json"),
                },
            ),
        ).start(timeout_s=180)
        yield procs
    finally:
        for name in ("gateway", "search", "encoder"):
            if name in procs:
                procs[name].stop()


def seed_gateway(address: str, count: int, search_address: str = "") -> dict[str, Any]:
    """Ingest `count` real images (the open data set's sample) into tenant demo through the gateway, and
    wait until their deferred analysis is done: by the search service's pending list when its address
    is given (an image the safety detector flags stays hidden from the demo key for good, and a read
    through the gateway cannot tell it from one still pending), else by reading each through the
    gateway."""
    import grpc
    from imagesearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, search_pb2, search_pb2_grpc

    images = workload.load_images(count)

    def requests() -> Iterator[gateway_pb2.IngestRequest]:
        for i, im in enumerate(images):
            yield gateway_pb2.IngestRequest(
                asset_id=f"perf-{i}",
                image=im.data,
                uri=f"bench://{im.id}",
                caption=im.caption,
                tags=list(im.tags),
                license=common_pb2.License(name=im.license),
                source=f"perf:{im.source}",
            )

    outcomes: dict[str, int] = {}
    start = time.perf_counter()
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(address, options=opts) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        md = (("authorization", f"Bearer {API_KEY}"),)
        pending: list[str] = []
        for ack in stub.Ingest(requests(), metadata=md, timeout=600):
            name = gateway_pb2.IngestOutcome.Name(ack.outcome)
            outcomes[name] = outcomes.get(name, 0) + 1
            if ack.analysis_state == common_pb2.ANALYSIS_STATE_PENDING:
                pending.append(ack.asset_id)
        # Deferred analysis: the seeded images are searchable once analysed; the steps need them all.
        deadline = time.monotonic() + 600
        while pending and time.monotonic() < deadline:
            if search_address:
                with grpc.insecure_channel(search_address) as sch:
                    listed = search_pb2_grpc.SearchServiceStub(sch).ListPendingAnalysis(
                        search_pb2.ListPendingAnalysisRequest(tenant="demo"), timeout=30
                    )
                waiting = {a.asset_id for a in listed.assets}
                pending = [a for a in pending if a in waiting]
            else:
                still = []
                for asset_id in pending:
                    try:
                        stub.GetAsset(gateway_pb2.GetAssetRequest(asset_id=asset_id), metadata=md, timeout=30)
                    except grpc.RpcError as exc:
                        if exc.code() is not grpc.StatusCode.NOT_FOUND:
                            raise
                        still.append(asset_id)
                pending = still
            if pending:
                time.sleep(0.5)
    seconds = time.perf_counter() - start
    return {
        "images": len(images),
        "outcomes": outcomes,
        "still_pending": len(pending),
        "seconds": round(seconds, 1),
    }


# ---------------------------------------------------------------------------------------------------------
# Steps


def run_logged(name: str, cmd: list[str], out: Path, timeout_s: float) -> dict[str, Any]:
    """Run one step's command, its output to logs/<name>.log; never raises."""
    log_path = out / "logs" / f"{name}.log"
    record: dict[str, Any] = {"command": shlex.join(cmd), "loadavg_start": loadavg(), "log": str(log_path)}
    say(f"{name}: {record['command']}")
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            record["returncode"] = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # ours: a new session started above
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            record["returncode"] = None
            record["error"] = f"stopped after its time limit of {timeout_s:g}s"
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["loadavg_end"] = loadavg()
    if record["returncode"] not in (0, None):
        tail = log_path.read_text(errors="replace")[-1500:]
        record["error"] = f"exit code {record['returncode']}: {tail}"
    say(
        f"{name}: {record['seconds']} s, load {record['loadavg_end']}"
        + (" FAILED" if "error" in record else "")
    )
    return record


def ghz_steps(args: argparse.Namespace, prof: dict[str, Any], out: Path, steps: dict[str, Any]) -> None:
    want_shared, want_one = "ghz" in args.only, "one-core" in args.only
    if want_one and (os.cpu_count() or 1) < 2:
        steps["one-core"] = {"error": "needs 2 cores (server on core 0, ghz on core 1)"}
        want_one = False
    work = Path(tempfile.mkdtemp(prefix="perf-report-"))
    echo = echo_asyncio = None
    try:
        echo, echo_asyncio = EchoServer(uvloop=True), EchoServer(uvloop=False)
        with own_suite(work) as suite:
            say(f"suite up: gateway {suite['gateway'].address}, echo {echo.address} ({echo.loop})")
            seeded = seed_gateway(suite["gateway"].address, prof["seed_images"], suite["search"].address)
            say(f"ingested into tenant demo: {seeded}")
            pids = {name: p.proc.pid for name, p in suite.items()} | {
                "echo": echo.proc.pid,
                "echo_asyncio": echo_asyncio.proc.pid,
            }
            base = [
                PY,
                "-m",
                "bench.ghz.run",
                "--suite",
                str(REPO / "bench/ghz/perf_suite.json"),
                "--profile",
                prof["ghz_profile"],
                "--gateway",
                suite["gateway"].address,
                "--encoder",
                suite["encoder"].address,
                "--search",
                suite["search"].address,
                "--api-key",
                API_KEY,
                "--budget-s",
                "600",
            ]
            watch = [f"--watch-pid={name}={pid}" for name, pid in pids.items()]
            if want_shared:
                cmd = [*base, "--echo", echo.address, "--echo-asyncio", echo_asyncio.address, *watch]
                cmd += ["--out", str(out / "ghz"), "--note", "servers and ghz on the shared cores"]
                steps["ghz"] = run_logged("ghz", cmd, out, prof["timeouts"]["ghz"])
                steps["ghz"]["seeded"] = seeded
                render(out / "ghz", out)
            if want_one:
                threads = {name: pin(pid, {0}) for name, pid in pids.items()}
                try:
                    cmd = [*base, "--echo", echo.address, "--ghz-cpu-list", "1", *watch]
                    cmd += [f"--only={name}" for name in ONE_CORE_SCENARIOS]
                    cmd += [
                        "--out",
                        str(out / "ghz-one-core"),
                        "--note",
                        "one core: every server thread pinned to core 0 (taskset -a -p -c 0), ghz to core 1 "
                        "(taskset -c 1, --cpus 1)",
                    ]
                    steps["one-core"] = run_logged("one-core", cmd, out, prof["timeouts"]["one-core"])
                    steps["one-core"]["pinned_threads"] = threads
                    steps["one-core"]["seeded"] = seeded
                finally:
                    every = set(range(os.cpu_count() or 1))
                    for pid in pids.values():
                        pin(pid, every)
                render(out / "ghz-one-core", out)
    except Exception as err:  # a broken step must not lose the others' figures
        for name, wanted in (("ghz", want_shared), ("one-core", want_one)):
            if wanted and name not in steps:
                steps[name] = {"error": f"{type(err).__name__}: {err}"[-2000:]}
        say(f"ghz steps failed: {err}")
    finally:
        for server in (echo, echo_asyncio):
            if server is not None:
                server.stop()
        shutil.rmtree(work, ignore_errors=True)


def render(run_dir: Path, out: Path) -> None:
    if (run_dir / "summary.json").exists():
        with (out / "logs" / f"render-{run_dir.name}.log").open("w") as log:
            subprocess.run([PY, "-m", "bench.ghz.render", str(run_dir)], cwd=REPO, stdout=log, stderr=log)


# ---------------------------------------------------------------------------------------------------------
# Comparisons


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def ghz_scenarios(run_dir: Path) -> dict[str, dict[str, Any]]:
    summary = load_json(run_dir / "summary.json") or {}
    return {s["name"]: s for s in summary.get("scenarios", []) if "rps" in s}


def dig(obj: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


class Rows:
    """The comparison table: one row per (measured figure, baseline figure from the same run)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.missing: list[str] = []

    def add(
        self,
        section: str,
        what: str,
        unit: str,
        value: float | None,
        baseline_name: str,
        baseline: float | None,
        better: str,
        note: str = "",
    ) -> None:
        if value is None or baseline is None:
            self.missing.append(f"{section}: {what} ({unit}) vs {baseline_name}: not measured")
            return
        ratio = value / baseline if baseline else None
        self.rows.append(
            {
                "section": section,
                "what": what,
                "unit": unit,
                "value": value,
                "baseline_name": baseline_name,
                "baseline": baseline,
                "ratio": None if ratio is None else round(ratio, 3),
                "better": better,
                "note": note,
            }
        )


def lat(s: dict[str, Any] | None, pct: str) -> float | None:
    if not s:
        return None
    return s["latency_ms"][pct] if s["latency_ms"]["n"] else None


def rps(s: dict[str, Any] | None) -> float | None:
    return s["rps"] if s else None


def per_cpu(s: dict[str, Any] | None) -> float | None:
    return s.get("calls_per_server_cpu_s") if s else None


def compare(out: Path) -> Rows:
    r = Rows()
    g = ghz_scenarios(out / "ghz")
    one = ghz_scenarios(out / "ghz-one-core")
    echo = g.get("echo.health")

    # A. The Python gRPC servers against the minimal echo server (same Health/Check call, c=8).
    sec = "A. gRPC servers vs echo"
    for svc in ("gateway", "encoder", "search"):
        s = g.get(f"{svc}.health")
        r.add(sec, f"{svc} Health/Check", "rps", rps(s), "echo Health/Check", rps(echo), "higher")
        r.add(sec, f"{svc} Health/Check", "p50 ms", lat(s, "p50"), "echo", lat(echo, "p50"), "lower")
        r.add(
            sec, f"{svc} Health/Check", "calls/CPU-s", per_cpu(s), "echo", per_cpu(echo), "higher",
            "calls per CPU-second of the server processes: robust to other load on the machine",
        )  # fmt: skip
    s = g.get("echo_asyncio.health")
    r.add(sec, "echo on plain asyncio", "rps", rps(s), "echo on uvloop", rps(echo), "higher")
    r.add(sec, "echo on plain asyncio", "calls/CPU-s", per_cpu(s), "echo on uvloop", per_cpu(echo), "higher")
    s = g.get("gateway.search_invalid")
    r.add(
        sec, "gateway Search, invalid (auth + validation + error status)", "rps", rps(s), "echo", rps(echo),
        "higher", "logs one line per call at info (a client error)",
    )  # fmt: skip
    s = g.get("gateway.search_text_hot")
    r.add(sec, "gateway Search, cached page", "rps", rps(s), "echo", rps(echo), "higher")
    r.add(sec, "gateway Search, cached page", "p99 ms", lat(s, "p99"), "echo", lat(echo, "p99"), "lower")

    # B. One core: servers pinned to core 0, ghz on core 1.
    sec = "B. one server core"
    e1 = one.get("echo.health")
    r.add(sec, "echo Health/Check, one core", "rps", rps(e1), "published grpc.aio figure", PUBLISHED_ECHO_RPS,
          "higher")  # fmt: skip
    s = one.get("gateway.health")
    r.add(sec, "gateway Health/Check, one core", "rps", rps(s), "echo, one core", rps(e1), "higher")
    s = one.get("gateway.search_text_hot")
    r.add(
        sec, "cached gateway search, one core (gateway+search+encoder)", "rps", rps(s), "target",
        TARGET_RPS_PER_CORE, "higher",
    )  # fmt: skip
    r.add(sec, "cached gateway search, one core", "p99 ms", lat(s, "p99"), "target", TARGET_P99_MS, "lower")
    r.add(sec, "cached gateway search, one core", "rps", rps(s), "echo, one core", rps(e1), "higher")
    s = one.get("search.query_cached")
    r.add(sec, "search Query, cached, one core", "rps", rps(s), "echo, one core", rps(e1), "higher")
    s = g.get("gateway.search_text_hot")
    r.add(
        sec, "cached gateway search, shared cores", "calls/CPU-s", per_cpu(s), "target per core",
        TARGET_RPS_PER_CORE, "higher", "requests per CPU-second of gateway + search + encoder",
    )  # fmt: skip

    # C. Encoder: via Triton (and embedded) against raw ONNX Runtime.
    sec = "C. encoder vs raw ONNX Runtime"
    enc = load_json(out / "encoder.json") or {}
    cells = {(c["runtime"], c["kind"], c["batch"], c["concurrency"]): c for c in enc.get("cells", [])}
    shapes = sorted({(k[1], k[2], k[3]) for k in cells}, key=lambda x: (x[0], x[1], x[2]))
    picked = [(kind, b, c) for kind, b, c in shapes if (b, c) in ((1, 1), (8, 8))]
    for kind, b, c in picked:
        raw, prep = cells.get(("raw", kind, b, c)), cells.get(("raw+prep", kind, b, c))
        for runtime in ("triton", "embedded"):
            cell = cells.get((runtime, kind, b, c))
            if not cell or cell.get("skipped"):
                continue
            label = f"{kind} b{b} c{c}: {runtime} service"
            r.add(sec, label, "items/s", cell["items_per_s"], "raw ORT", dig(raw, "items_per_s"), "higher")
            r.add(
                sec,
                label,
                "items/s",
                cell["items_per_s"],
                "raw ORT + prep",
                dig(prep, "items_per_s"),
                "higher",
            )
            r.add(
                sec, label, "items/CPU-s", cell["items_per_cpu_s"], "raw ORT + prep",
                dig(prep, "items_per_cpu_s"), "higher",
            )  # fmt: skip
            if (b, c) == (1, 1):
                r.add(sec, label, "p50 ms", cell["p50_ms"], "raw ORT + prep", dig(prep, "p50_ms"), "lower")

    # D. Weaviate against the embedded backend (bench/search.py).
    sec = "D. Weaviate vs embedded"
    srch = load_json(out / "search.json") or []
    by_backend = {b.get("backend"): b for b in srch if isinstance(b, dict)}
    emb, wv = by_backend.get("embedded"), by_backend.get("weaviate")
    conc = None
    for key in dig(emb, "grpc_memory_cache") or {}:
        if key.startswith("hybrid_uncached_c") and key != "hybrid_uncached_c1":
            conc = key
    grpc_mem = "grpc_memory_cache"
    for what, unit, path, better in (
        ("indexing", "upserts/s", ("index", "upserts_per_s"), "higher"),
        ("recall@10 vs exact", "recall", ("recall_at_10",), "higher"),
        ("hybrid query, uncached, gRPC c1", "p50 ms", (grpc_mem, "hybrid_uncached_c1", "p50_ms"), "lower"),
        ("hybrid query, uncached, gRPC c1", "p99 ms", (grpc_mem, "hybrid_uncached_c1", "p99_ms"), "lower"),
        ("hybrid query, uncached, gRPC", "QPS", (grpc_mem, conc or "-", "qps"), "higher"),
        ("hybrid query, cached, gRPC c1", "p50 ms", (grpc_mem, "hybrid_cached_c1", "p50_ms"), "lower"),
    ):
        label = what + (f" ({conc.rsplit('_', 1)[1]})" if unit == "QPS" and conc else "")
        r.add(sec, f"Weaviate: {label}", unit, dig(wv, *path), "embedded", dig(emb, *path), better)

    # E. Cached against uncached.
    sec = "E. cached vs uncached"
    for backend, b in (("embedded", emb), ("weaviate", wv)):
        for where, key in (
            ("in process", "inside_memory_cache"),
            ("in process, Redis", "inside_redis_cache"),
        ):
            r.add(
                sec, f"search {backend} {where}: cached hybrid", "p50 ms",
                dig(b, key, "hybrid_cached", "p50_ms"), "uncached", dig(b, key, "hybrid_uncached", "p50_ms"),
                "lower",
            )  # fmt: skip
        for cache in ("memory", "redis"):
            r.add(
                sec, f"search {backend} gRPC c1 ({cache} cache): cached", "p50 ms",
                dig(b, f"grpc_{cache}_cache", "hybrid_cached_c1", "p50_ms"), "uncached",
                dig(b, f"grpc_{cache}_cache", "hybrid_uncached_c1", "p50_ms"), "lower",
            )  # fmt: skip
    qc, qu = g.get("search.query_cached"), g.get("search.query_uncached")
    r.add(sec, "search Query (ghz c8, window 100): cached", "rps", rps(qc), "uncached", rps(qu), "higher")
    r.add(
        sec, "search Query (ghz c8, window 100): cached", "p50 ms", lat(qc, "p50"), "uncached",
        lat(qu, "p50"), "lower",
    )  # fmt: skip
    hc, hu = g.get("gateway.search_text_hot_c1"), g.get("gateway.search_text_c1")
    r.add(
        sec,
        "gateway Search (ghz c1): cached page",
        "p50 ms",
        lat(hc, "p50"),
        "uncached",
        lat(hu, "p50"),
        "lower",
    )
    gw = load_json(out / "gateway.json") or {}
    ts = gw.get("text_search") or {}
    r.add(
        sec, "gateway Search (gateway.py c1): cached", "p50 ms", dig(ts, "cached", "p50_ms"), "uncached",
        dig(ts, "uncached", "p50_ms"), "lower",
    )  # fmt: skip
    r.add(
        sec, "gateway Search (gateway.py, concurrent): cached", "QPS", dig(ts, "cached_concurrent", "qps"),
        "uncached", dig(ts, "uncached_concurrent", "qps"), "higher",
    )  # fmt: skip

    # F. The gateway end to end against the sum of its hops. A gateway watching index generations
    # (the default) makes no GetIndexGeneration call on a search, so that hop is not in the sum.
    sec = "F. gateway vs sum of hops"
    hops = [g.get(n) for n in ("encoder.encode_text_c1", "search.first_stage_c1")]
    for stat in ("mean", "p50"):
        parts = [lat(h, stat) for h in hops]
        total = sum(p for p in parts if p is not None) if None not in parts else None
        r.add(
            sec, "uncached text search (ghz c1)", f"{stat} ms", lat(hu, stat),
            "EncodeTexts + Query(window 100)", total, "lower",
            "hops measured alone, one call at a time, same run",
        )  # fmt: skip
    r.add(
        sec, "cached text search (ghz c1)", "mean ms", lat(hc, "mean"), "GetIndexGeneration",
        lat(g.get("search.index_generation_c1"), "mean"), "lower",
        "the cheapest search-service call: a hit served from memory makes no call at all",
    )  # fmt: skip
    enc_p50, fs_p50 = (
        dig(ts, "baseline_encode_text", "p50_ms"),
        dig(ts, "baseline_first_stage_window100_uncached", "p50_ms"),
    )
    r.add(
        sec, "uncached text search (gateway.py c1)", "p50 ms", dig(ts, "uncached", "p50_ms"),
        "EncodeTexts + Query(window 100)", enc_p50 + fs_p50 if enc_p50 and fs_p50 else None, "lower",
    )  # fmt: skip
    ing = gw.get("ingest") or {}
    r.add(
        sec, "ingest, safety + OCR off", "images/s", ing.get("ingest_no_analysis_img_s"),
        "EncodeImages alone", ing.get("encoder_only_img_s"), "higher",
    )  # fmt: skip
    # bench/gateway.py's gateway analyses inline (before the acknowledgement, as the end-to-end tests
    # need); the default, deferred analysis, is bench/ingest_ack.py's.
    r.add(
        sec, "ingest, safety + OCR inline", "images/s", ing.get("ingest_with_safety_ocr_img_s"),
        "EncodeImages alone", ing.get("encoder_only_img_s"), "higher",
        "analysis before the acknowledgement (not the default: bench/ingest_ack.py measures deferred)",
    )  # fmt: skip
    return r


# ---------------------------------------------------------------------------------------------------------
# Output


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "recall":
        return f"{value:.3f}"
    if unit.endswith("ms"):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def markdown(report: dict[str, Any], rows: Rows) -> str:
    lines = [
        f"# Performance report: run {report['run_id']} ({report['profile']})",
        "",
        f"- started {report['started_utc']}, {report['wall_s']} s in all; commit `{report['git_commit']}`; "
        f"{report['host']['cpus']} cores ({report['host']['cpu_model']}), Python {report['host']['python']}, "
        f"grpcio {report['versions'].get('grpcio')}",
        f"- load average (1/5/15 min): {report['loadavg_start']} at the start, {report['loadavg_end']} at "
        "the end; per step: " + "; ".join(f"{k} {v.get('loadavg_end')}" for k, v in report["steps"].items()),
        "- every ratio is measured / baseline, both from this run; `better` says which way is good",
        "",
        "| section | measured | unit | value | baseline (same run) | baseline value | ratio | better "
        "| note |",
        "|---|---|---|---:|---|---:|---:|---|---|",
    ]
    for row in rows.rows:
        lines.append(
            f"| {row['section']} | {row['what']} | {row['unit']} | {fmt(row['value'], row['unit'])} "
            f"| {row['baseline_name']} | {fmt(row['baseline'], row['unit'])} | {row['ratio']:.3f} "
            f"| {row['better']} | {row['note']} |"
        )
    failed = {k: v["error"] for k, v in report["steps"].items() if v.get("error")}
    if failed or rows.missing:
        lines += ["", "Not measured in this run:", ""]
        lines += [f"- step `{k}`: {v[:300]}" for k, v in failed.items()]
        lines += [f"- {m}" for m in rows.missing]
    enc = load_json(Path(report["out"]) / "encoder.json")
    if enc and enc.get("cells"):
        lines += [
            "",
            f"## Encoder detail (bench/encoder.py, model {enc.get('model')}, "
            f"{enc.get('threads')} ONNX Runtime threads)",
            "",
            "| kind | batch | conc | runtime | items/s | p50 ms | p99 ms | x raw | x raw+prep "
            "| items/CPU-s |",
            "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in enc["cells"]:
            if c.get("skipped"):
                continue
            lines.append(
                f"| {c['kind']} | {c['batch']} | {c['concurrency']} | {c['runtime']} "
                f"| {c['items_per_s']:.1f} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} | {c['ratio'] or 0:.2f} "
                f"| {c['ratio_prep'] or 0:.2f} | {c['items_per_cpu_s']:.1f} |"
            )
    lines += ["", "Commands:", ""]
    lines += [f"- `{k}`: `{v['command']}`" for k, v in report["steps"].items() if v.get("command")]
    for run in ("ghz", "ghz-one-core"):
        if (Path(report["out"]) / run / "results.md").exists():
            lines.append(f"- ghz tables and plots: [{run}/results.md]({run}/results.md)")
    if report.get("plot"):
        lines += ["", f"![ratios]({report['plot']})"]
    return "\n".join(lines) + "\n"


def plot(rows: Rows, out: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib is not importable: no comparisons.png")
        return None
    data = [row for row in rows.rows if row["ratio"]]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(11, 0.8 + 0.24 * len(data)))
    ys = list(range(len(data)))
    palette = ["#277da1", "#f9844a", "#4d908e", "#f94144", "#90be6d", "#577590", "#f9c74f"]
    sections = list(dict.fromkeys(row["section"] for row in data))
    colour = {name: palette[i % len(palette)] for i, name in enumerate(sections)}
    for name in sections:
        idx = [i for i, row in enumerate(data) if row["section"] == name]
        ax.barh(idx, [data[i]["ratio"] for i in idx], color=colour[name], label=name)
    ax.axvline(1.0, color="black", linewidth=0.8)
    labels = [f"{row['what'][:58]} [{row['unit']}] / {row['baseline_name'][:26]}" for row in data]
    ax.set_yticks(ys, labels, fontsize=7)
    ax.set_ylim(len(data) - 0.5, -0.5)
    ax.set_xscale("log")
    ax.set_xlabel("measured / same-run baseline (log scale); `better` in report.md says which side is good")
    ax.legend(loc="upper center", bbox_to_anchor=(0.4, -0.05), ncol=3, fontsize=7)
    ax.set_title("imagesearch: each figure against its same-run baseline")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "comparisons.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "comparisons.png"


def print_table(rows: Rows) -> None:
    print(f"\n{'measured':62} {'unit':12} {'value':>10}  {'baseline':34} {'value':>10} {'ratio':>7}")
    section = None
    for row in rows.rows:
        if row["section"] != section:
            section = row["section"]
            print(f"-- {section}")
        print(
            f"{row['what'][:62]:62} {row['unit']:12} {fmt(row['value'], row['unit']):>10}  "
            f"{row['baseline_name'][:34]:34} {fmt(row['baseline'], row['unit']):>10} {row['ratio']:7.3f}"
        )
    for m in rows.missing:
        print(f"   not measured: {m}")


def versions() -> dict[str, str]:
    import grpc

    found = {"grpcio": grpc.__version__}
    with contextlib.suppress(ImportError):
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
    with contextlib.suppress(ImportError):
        import uvloop

        found["uvloop"] = uvloop.__version__
    return found


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small counts and short phases (~3-5 min)")
    ap.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps of {', '.join(STEPS)}")
    ap.add_argument("--out", type=Path, help="output dir (default bench/results/perf-<UTC time>)")
    ap.add_argument(
        "--rebuild", action="store_true", help="only rebuild report.md/json and the plot from OUT's files"
    )
    args = ap.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(STEPS)
    if unknown:
        raise SystemExit(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    profile = "quick" if args.quick else "full"
    prof = PROFILES[profile]
    started = time.time()
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    out = args.out or REPO / "bench/results" / f"perf-{run_id}{'-quick' if args.quick else ''}"
    (out / "logs").mkdir(parents=True, exist_ok=True)

    previous = load_json(out / "report.json") if args.rebuild else None
    # Steps recorded in OUT by an earlier invocation (e.g. --only ghz, then --only search) are kept.
    steps: dict[str, Any] = dict((load_json(out / "report.json") or {}).get("steps", {}))
    load_start = previous["loadavg_start"] if previous else loadavg()
    if not args.rebuild:
        say(f"profile {profile}, steps {', '.join(args.only)}, out {out}; load average {load_start}")
        if "ghz" in args.only or "one-core" in args.only:
            ghz_steps(args, prof, out, steps)
        scripts = {
            "encoder": ["-m", "bench.encoder", *prof["encoder"], "--out", str(out / "encoder.json")],
            "search": ["-m", "bench.search", *prof["search"], "--out", str(out / "search.json")],
            "gateway": ["-m", "bench.gateway", *prof["gateway"], "--json", str(out / "gateway.json")],
        }
        for name, cmd in scripts.items():
            if name in args.only:
                steps[name] = run_logged(name, [PY, *cmd], out, prof["timeouts"][name])

    rows = compare(out)
    report: dict[str, Any] = {
        "run_id": previous["run_id"] if previous else run_id,
        "profile": previous["profile"] if previous else profile,
        "started_utc": previous["started_utc"]
        if previous
        else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": previous["wall_s"] if previous else round(time.time() - started, 1),
        "out": str(out),
        "git_commit": previous["git_commit"]
        if previous
        else subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "host": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "machine": platform.machine(),
            "python": platform.python_version(),
        },
        "versions": versions(),
        "loadavg_start": load_start,
        "loadavg_end": previous["loadavg_end"] if previous else loadavg(),
        "targets": {
            "cached_gateway_rps_per_core": TARGET_RPS_PER_CORE,
            "p99_ms": TARGET_P99_MS,
            "published_echo_rps_one_core": PUBLISHED_ECHO_RPS,
        },
        "steps": steps,
        "comparisons": rows.rows,
        "not_measured": rows.missing,
    }
    report["plot"] = plot(rows, out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(markdown(report, rows))
    print_table(rows)
    say(f"wrote {out / 'report.md'} ({report['wall_s']} s; load average {report['loadavg_end']})")
    return 0 if not any(v.get("error") for v in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
