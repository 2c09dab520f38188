#!/usr/bin/env python3
"""Run a ghz load suite (suite.json by default) against running imagesearch services on loopback.

    .venv/bin/python -m bench.ghz.run --gateway 127.0.0.1:50070 --api-key demo-key \\
        --encoder 127.0.0.1:50071 --search 127.0.0.1:50072 [--tls-dir .data/certs] [--profile smoke|full] \\
        [--only 'search.*'] \\
        [--out bench/results/ghz-<time>] [--synthetic-vectors] [--keep-data] [--budget-s 900] \\
        [--echo 127.0.0.1:P] [--echo-asyncio 127.0.0.1:P] [--suite bench/ghz/perf_suite.json] \\
        [--ghz-cpu-list 1] [--watch-pid gateway=PID ...] [--note TEXT]

--echo / --echo-asyncio: bench/echo_server.py (uvloop / plain asyncio), the minimal-server floor the
services' scenarios are compared with. --ghz-cpu-list pins ghz to cores (taskset -c) and --watch-pid
records each named server process's CPU time per scenario (calls per server CPU-second); both serve the
"one core" figures of bench/perf_report.py, which pins the servers itself.

Targets that are not given, or do not answer a health check, have their scenarios skipped (with the
reason in the summary). Every run is bounded: each scenario by its request count AND its duration
(ghz -n / -x), the whole run by --budget-s; addresses must be loopback.

Writes, under --out:
    summary.json             one record per scenario: rps, latency p50/p95/p99 (ms) over the responses
                             with the expected status, the same over all responses, status and error
                             distributions, ratios against the scenario's baseline (a health check on the
                             same service, measured in the same run); with --watch-pid, the server
                             processes' CPU seconds and calls per server CPU-second
    raw/<scenario>.json      ghz's own JSON report (-O json), per-request details included
    data/<scenario>.json     the request data given to ghz (only with --keep-request-data)
    imagesearch.protoset, health.protoset   the descriptors ghz used
Render the plots and the markdown table with bench/ghz/render.py OUT.
"""

from __future__ import annotations

import argparse
import atexit
import fnmatch
import hashlib
import ipaddress
import json
import math
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.ghz import workload

REPO = workload.REPO
SUITE = Path(__file__).resolve().parent / "suite.json"
BENCH_TENANT = "ghz-bench"  # search-service scenarios write and read this tenant only

# ghz reports Go's status names ("InvalidArgument"); summaries use the gRPC spelling.
GO_CODES = {
    "OK": "OK",
    "Canceled": "CANCELLED",
    "Unknown": "UNKNOWN",
    "InvalidArgument": "INVALID_ARGUMENT",
    "DeadlineExceeded": "DEADLINE_EXCEEDED",
    "NotFound": "NOT_FOUND",
    "AlreadyExists": "ALREADY_EXISTS",
    "PermissionDenied": "PERMISSION_DENIED",
    "ResourceExhausted": "RESOURCE_EXHAUSTED",
    "FailedPrecondition": "FAILED_PRECONDITION",
    "Aborted": "ABORTED",
    "OutOfRange": "OUT_OF_RANGE",
    "Unimplemented": "UNIMPLEMENTED",
    "Internal": "INTERNAL",
    "Unavailable": "UNAVAILABLE",
    "DataLoss": "DATA_LOSS",
    "Unauthenticated": "UNAUTHENTICATED",
}


def say(msg: str) -> None:
    print(f"[ghz-suite] {msg}", file=sys.stderr, flush=True)


def check_loopback(addr: str) -> None:
    host = addr.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise SystemExit(f"{addr}: the load suite only targets loopback addresses (127.0.0.0/8, ::1, localhost)")


# ---------------------------------------------------------------------------------------------------------
# Preparation: protosets, reachability, vectors


def build_protosets(out: Path) -> tuple[Path, Path]:
    """imagesearch.protoset from protos/ (buf build); health.protoset from grpcio-health-checking."""
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2

    ours = out / "imagesearch.protoset"
    subprocess.run(
        [str(REPO / "node_modules/.bin/buf"), "build", "--as-file-descriptor-set", "-o", str(ours)],
        cwd=REPO,
        check=True,
    )
    fds = descriptor_pb2.FileDescriptorSet()
    health_pb2.DESCRIPTOR.CopyToProto(fds.file.add())
    health = out / "health.protoset"
    health.write_bytes(fds.SerializeToString())
    return ours, health


# Internal services that run mutual TLS (`--tls-dir`): address -> the certificate files to present.
INTERNAL_TLS: dict[str, Any] = {}


def open_channel(addr: str, options: list[tuple[str, Any]] | None = None) -> Any:
    """A channel to `addr`: mutual TLS where --tls-dir put its address in INTERNAL_TLS, else plaintext."""
    import grpc

    files = INTERNAL_TLS.get(addr)
    if files is None:
        return grpc.insecure_channel(addr, options=options)
    from services.common.tls import client_credentials

    return grpc.secure_channel(addr, client_credentials(files), options=options)


def ghz_transport(addr: str) -> list[str]:
    """ghz's transport flags for `addr` (see open_channel)."""
    files = INTERNAL_TLS.get(addr)
    if files is None:
        return ["--insecure"]
    return [
        "--cacert",
        str(files.ca),
        "--cert",
        str(files.cert),
        "--key",
        str(files.key),
        "--cname",
        "localhost",
    ]


def healthy(addr: str) -> str | None:
    """None when the server answers a health check (any status), else why not."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with open_channel(addr) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as err:
            return f"{addr} does not answer: {err.code().name}"  # type: ignore[attr-defined]
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        say(
            f"{addr} reports {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
            " (measured anyway)"
        )
    return None


@dataclass
class Vectors:
    """Embeddings for the search-service scenarios, all from one model."""

    model: dict[str, str]
    dim: int
    origin: str  # "encoder" or "synthetic"
    images: list[np.ndarray] = field(default_factory=list)  # aligned with the image sample
    queries: list[np.ndarray] = field(default_factory=list)  # aligned with the query sample


def encoder_vectors(addr: str, images: list[workload.SampleImage], queries: list[str]) -> Vectors:
    from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc

    with open_channel(addr, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        info = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=30)

        def run(items: list[Any], call: Any, make: Any, batch: int) -> list[np.ndarray]:
            out = []
            for i in range(0, len(items), batch):
                resp = call(make(items[i : i + batch]), timeout=300)
                for r in resp.results:
                    if r.WhichOneof("outcome") != "embedding":
                        raise SystemExit(f"encoder failed an item while preparing vectors: {r.error.message}")
                    out.append(np.frombuffer(r.embedding.values, dtype="<f4"))
            return out

        image_vecs = run(
            images,
            stub.EncodeImages,
            lambda b: encoder_pb2.EncodeImagesRequest(
                images=[encoder_pb2.ImageInput(id=im.id, data=im.data) for im in b]
            ),
            max(1, min(16, info.max_batch_images or 16)),
        )
        query_vecs = run(
            queries,
            stub.EncodeTexts,
            lambda b: encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text=t) for t in b]),
            max(1, min(64, info.max_batch_texts or 64)),
        )
    model = {"name": info.model.name, "version": info.model.version}
    return Vectors(model, int(info.dimension), "encoder", image_vecs, query_vecs)


def synthetic_vectors(n_images: int, n_queries: int, dim: int = 512, seed: int = 3) -> Vectors:
    rng = np.random.default_rng(seed)

    def unit(n: int) -> list[np.ndarray]:
        v = rng.standard_normal((n, dim)).astype("<f4")
        return list(v / np.linalg.norm(v, axis=1, keepdims=True))

    return Vectors(
        {"name": "ghz-bench-synthetic", "version": "0"}, dim, "synthetic", unit(n_images), unit(n_queries)
    )


def emb(vec: np.ndarray, model: dict[str, str]) -> dict[str, Any]:
    return {"values": workload.b64(vec.astype("<f4").tobytes()), "model": model}


# ---------------------------------------------------------------------------------------------------------
# Request data per scenario kind


@dataclass
class Context:
    run_id: str
    images: list[workload.SampleImage]  # any format (query-by-image)
    ingest_images: list[workload.SampleImage]  # PNG/JPEG (ingest, with unique trailing bytes)
    queries: list[str]
    vectors: Vectors | None
    ingested_ids: list[str] = field(default_factory=list)
    upserted_ids: list[str] = field(default_factory=list)


def query_slice(ctx: Context, p: dict[str, Any]) -> list[str]:
    """`queries` query texts starting at `skip` (disjoint slices keep one scenario's texts out of the
    caches another scenario filled)."""
    skip = int(p.get("skip", 0))
    return ctx.queries[skip : skip + p["queries"]]


def queries_needed(scenarios: list[dict[str, Any]]) -> int:
    return max([200] + [int(s["data"].get("skip", 0)) + int(s["data"].get("queries", 0)) for s in scenarios])


def build_data(kind: str, p: dict[str, Any], ctx: Context, name: str) -> Any:
    """The JSON data ghz sends: an object, or a list (round-robin for unary calls, the messages of each
    stream for streaming calls). `{{ .RequestNumber }}` / `{{ .UUID }}` are ghz template fields."""
    if kind == "health":
        return {"service": ""}
    if kind in ("empty", "search_get_stats"):
        return {"tenant": BENCH_TENANT} if kind == "search_get_stats" else {}
    if kind == "search_index_generation":
        return {"tenant": p.get("tenant", BENCH_TENANT)}
    if kind == "gateway_search_text":
        return [{"text": q, "page_size": p["page_size"]} for q in query_slice(ctx, p)]
    if kind == "gateway_search_image":
        return [
            {"image": workload.b64(im.data), "page_size": p["page_size"]} for im in ctx.images[: p["images"]]
        ]
    if kind == "gateway_search_text_image":
        pairs = zip(ctx.images[: p["images"]], ctx.queries, strict=False)
        return [{"text": q, "image": workload.b64(im.data), "page_size": p["page_size"]} for im, q in pairs]
    if kind == "gateway_search_invalid":
        return {"page_size": 20}  # neither text nor image
    if kind == "gateway_get_asset":
        return [{"asset_id": a} for a in ctx.ingested_ids]
    if kind == "gateway_ingest":
        k = p["images_per_stream"]
        stream = []
        for i, im in enumerate(ctx.ingest_images[:k]):
            stream.append(
                {
                    "asset_id": f"ghz-{ctx.run_id}-{{{{ .RequestNumber }}}}-{i}",
                    "image": workload.unique_image_template(im.data),
                    "uri": f"bench://{im.id}",
                    "caption": im.caption,
                    "tags": list(im.tags),
                    "owner": "ghz-bench",
                    "license": {"name": im.license},
                    "source": f"ghz:{im.source}",
                }
            )
        return stream
    if kind == "encode_texts":
        qs, b = query_slice(ctx, p), p["batch"]
        return [
            {"texts": [{"id": str(j), "text": t} for j, t in enumerate(qs[i : i + b])]}
            for i in range(0, max(1, len(qs) - b + 1), b)
        ]
    if kind == "encode_images":
        ims, b = ctx.images[: p["images"]], p["batch"]
        return [
            {"images": [{"id": im.id, "data": workload.b64(im.data)} for im in ims[i : i + b]]}
            for i in range(0, max(1, len(ims) - b + 1), b)
        ]
    if kind == "stream_encode_images":
        return [{"image": {"id": im.id, "data": workload.b64(im.data)}} for im in ctx.images[: p["images"]]]
    if kind == "search_upsert":
        vecs = ctx.vectors
        assert vecs is not None
        image_vectors = list(zip(ctx.images, vecs.images, strict=False))[: p["images"]]
        batches = []
        for start in range(0, len(image_vectors), p["batch"]):
            records = []
            for j, (im, vec) in enumerate(image_vectors[start : start + p["batch"]]):
                records.append(
                    {
                        "asset": {
                            "asset_id": f"ghz-{ctx.run_id}-{{{{ .RequestNumber }}}}-{j}",
                            "caption": im.caption,
                            "tags": list(im.tags),
                            "source": f"ghz:{im.source}",
                            "license": {"name": im.license},
                            "uri": f"bench://{im.id}",
                        },
                        "image_embedding": emb(vec, vecs.model),
                    }
                )
            batches.append({"tenant": BENCH_TENANT, "assets": records})
        return batches
    if kind == "search_query":
        out = []
        skip = int(p.get("skip", 0))
        for i, q in enumerate(query_slice(ctx, p), start=skip):
            req: dict[str, Any] = {"tenant": p.get("tenant", BENCH_TENANT), "limit": p["limit"]}
            if p["mode"] in ("keyword", "hybrid"):
                req["text"] = q
            if p["mode"] in ("vector", "hybrid"):
                assert ctx.vectors is not None
                req["vector"] = emb(ctx.vectors.queries[i % len(ctx.vectors.queries)], ctx.vectors.model)
            if p.get("include_vectors"):
                req["include_vectors"] = True
            if p.get("skip_cache"):
                req["skip_cache"] = True
            out.append(req)
        return out
    raise SystemExit(f"unknown data kind {kind!r}")


# ---------------------------------------------------------------------------------------------------------
# Running ghz and summarising


def ghz_binary(explicit: str | None) -> str:
    if explicit:
        return explicit
    found = shutil.which("ghz")
    bin_dir = subprocess.run(
        [str(REPO / "scripts/install_tools.sh"), "--print-bin"], capture_output=True, text=True, check=True
    ).stdout.strip()
    pinned = Path(bin_dir) / "ghz"
    if not pinned.exists():
        if found:
            return found
        say("ghz not installed: scripts/install_tools.sh ghz")
        subprocess.run([str(REPO / "scripts/install_tools.sh"), "ghz"], check=True)
    return str(pinned)


def tool_version(binary: str) -> str:
    """The module version a `go install`ed binary was built from (ghz itself prints "dev")."""
    if shutil.which("go"):
        info = subprocess.run(["go", "version", "-m", binary], capture_output=True, text=True).stdout
        for line in info.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "mod":
                return f"{parts[1]} {parts[2]}"
    return "unknown"


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process (all its threads) has used so far; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def parse_watch(items: list[str]) -> dict[str, int]:
    watched = {}
    for item in items:
        name, _, pid = item.partition("=")
        if not name or not pid.isdigit():
            raise SystemExit(f"--watch-pid wants NAME=PID, got {item!r}")
        watched[name] = int(pid)
    return watched


def percentile_ms(lat_ns: list[int], pct: float) -> float | None:
    if not lat_ns:
        return None
    ordered = sorted(lat_ns)
    rank = max(0, math.ceil(pct / 100 * len(ordered)) - 1)  # nearest-rank
    return round(ordered[rank] / 1e6, 3)


def latency_summary(lat_ns: list[int]) -> dict[str, float | int | None]:
    return {
        "n": len(lat_ns),
        "p50": percentile_ms(lat_ns, 50),
        "p95": percentile_ms(lat_ns, 95),
        "p99": percentile_ms(lat_ns, 99),
        "mean": round(sum(lat_ns) / len(lat_ns) / 1e6, 3) if lat_ns else None,
        "max": round(max(lat_ns) / 1e6, 3) if lat_ns else None,
    }


def summarise(report: dict[str, Any], expect: str) -> dict[str, Any]:
    details = report.get("details") or []
    statuses: Counter[str] = Counter()
    expected_lat, all_lat = [], []
    for d in details:
        status = GO_CODES.get(d.get("status", ""), d.get("status", "") or "UNKNOWN")
        statuses[status] += 1
        all_lat.append(int(d["latency"]))
        if status == expect:
            expected_lat.append(int(d["latency"]))
    count = int(report.get("count", len(details)))
    unexpected = count - statuses.get(expect, 0)
    return {
        "count": count,
        "stopped_by": report.get("stopped_by"),
        "rps": round(float(report.get("rps", 0.0)), 2),
        "wall_s": round(int(report.get("total", 0)) / 1e9, 3),
        "expected_status": expect,
        "unexpected": unexpected,
        "unexpected_ratio": round(unexpected / count, 4) if count else None,
        "latency_ms": latency_summary(expected_lat),
        "latency_all_ms": latency_summary(all_lat),
        "status_distribution": dict(statuses.most_common()),
        "error_distribution": dict(Counter(report.get("errorDistribution") or {}).most_common(10)),
    }


def run_ghz(
    ghz: str,
    sc: dict[str, Any],
    addr: str,
    protoset: Path,
    data_file: Path,
    metadata: dict[str, str],
    n: int,
    concurrency: int,
    max_duration_s: float,
    cpus: int,
    out: Path | None,
    cpu_list: str | None = None,
) -> dict[str, Any]:
    """One ghz run of `n` requests, stopped after `max_duration_s` if it has not finished by then.

    ghz v0.121.0's own -x (max duration "with n respected") ignores -n (it sets the run duration, which
    resets n to MaxInt32), so the time bound is enforced here: SIGINT makes ghz stop and still print its
    report, and `--duration-stop ignore` leaves the calls cut off by the stop out of it. `cpu_list` pins
    ghz to those cores (`taskset -c`), e.g. to keep it off the core a pinned server runs on.
    """
    cmd = ["taskset", "-c", cpu_list] if cpu_list else []
    cmd += [
        ghz,
        *ghz_transport(addr),
        "--protoset",
        str(protoset),
        "--call",
        sc["call"],
        "--data-file",
        str(data_file),
        "-n",
        str(n),
        "-c",
        str(concurrency),
        "--connections",
        str(min(concurrency, 4)),
        "--timeout",
        "30s",
        "--duration-stop",
        "ignore",
        "--cpus",
        str(cpus),
        "--name",
        sc["name"],
        "-O",
        "json",
    ]
    if metadata:
        cmd += ["-m", json.dumps(metadata)]
    cmd.append(addr)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stopped_by = "count"
    try:
        stdout, stderr = proc.communicate(timeout=max_duration_s)
    except subprocess.TimeoutExpired:
        stopped_by = "time"
        proc.send_signal(signal.SIGINT)
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"ghz did not stop within 60s of SIGINT (after {max_duration_s:g}s)") from None
    if not stdout.strip().startswith("{"):
        raise RuntimeError(f"ghz failed ({proc.returncode}): {stderr.strip()[-2000:]}")
    report: dict[str, Any] = json.loads(stdout)
    report["stopped_by"] = stopped_by
    if out is not None:
        # ghz echoes the request data (megabytes of base64 images) and the metadata (the API key) into
        # its report: keep a digest of the one and redact the other.
        options = report.get("options", {})
        options["data"] = {
            "file": data_file.name,
            "sha256": hashlib.sha256(data_file.read_bytes()).hexdigest(),
        }
        if options.get("metadata"):
            options["metadata"] = dict.fromkeys(options["metadata"], "<redacted>")
        out.write_text(json.dumps(report))
    return report


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children (ghz, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stored_ids(gateway: str, api_key: str, candidates: list[str]) -> list[str]:
    """The candidate ids the gateway holds (GetAsset): verifies ingest and feeds gateway.get_asset."""
    import grpc
    from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

    found = []
    with grpc.insecure_channel(gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for asset_id in candidates:
            try:
                stub.GetAsset(
                    gateway_pb2.GetAssetRequest(asset_id=asset_id),
                    timeout=10,
                    metadata=(("authorization", f"Bearer {api_key}"),),
                )
                found.append(asset_id)
            except grpc.RpcError:
                pass
    return found


def cleanup(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    """Delete what the write scenarios stored (ids are known: run id + request number + index)."""
    import grpc
    from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc, search_pb2, search_pb2_grpc

    result: dict[str, Any] = {}
    if ctx.ingested_ids and args.gateway:
        deleted = 0
        with grpc.insecure_channel(args.gateway) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            for asset_id in ctx.ingested_ids:
                try:
                    stub.DeleteAsset(
                        gateway_pb2.DeleteAssetRequest(asset_id=asset_id),
                        timeout=10,
                        metadata=(("authorization", f"Bearer {args.api_key}"),),
                    )
                    deleted += 1
                except grpc.RpcError:
                    pass
        result["gateway_deleted"] = deleted
    if ctx.upserted_ids and args.search:
        with open_channel(args.search) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            deleted = 0
            for i in range(0, len(ctx.upserted_ids), 500):
                try:
                    resp = stub.DeleteAssets(
                        search_pb2.DeleteAssetsRequest(
                            tenant=BENCH_TENANT, asset_ids=ctx.upserted_ids[i : i + 500]
                        ),
                        timeout=60,
                    )
                    deleted += sum(r.deleted for r in resp.results)
                except grpc.RpcError as err:
                    say(f"cleanup of the search tenant failed: {err}")
        result["search_deleted"] = deleted
    return result


def written_ids(run_id: str, calls: int, per_call: int) -> list[str]:
    """Ids a write scenario may have used: ghz numbers its requests from 0. All `calls` requested count,
    since a call cut off by the time bound may still have stored its items."""
    return [f"ghz-{run_id}-{r}-{j}" for r in range(calls) for j in range(per_call)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gateway", help="gateway host:port (loopback)")
    ap.add_argument("--encoder", help="encoder host:port (loopback)")
    ap.add_argument("--search", help="search service host:port (loopback)")
    ap.add_argument("--echo", help="bench/echo_server.py host:port (uvloop), the gRPC floor")
    ap.add_argument("--echo-asyncio", help="bench/echo_server.py --no-uvloop host:port")
    ap.add_argument(
        "--api-key",
        default=os.environ.get("IMAGESEARCH_API_KEY", ""),
        help="gateway API key with the search, ingest and delete roles",
    )
    ap.add_argument("--suite", type=Path, default=SUITE)
    ap.add_argument("--profile", default="full", help="a profile of the suite file (full, smoke)")
    ap.add_argument("--only", action="append", default=[], help="scenario name glob (repeatable)")
    ap.add_argument(
        "--echo-page",
        action="store_true",
        help="the echo server answers GatewayService/Search with a page (bench/echo_server.py --page-file)",
    )
    ap.add_argument("--out", type=Path, help="output dir (default bench/results/ghz-<UTC time>)")
    ap.add_argument("--ghz", help="ghz binary (default: the pinned one from scripts/install_tools.sh)")
    ap.add_argument("--cpus", type=int, default=1, help="cores ghz may use (leave the rest to the servers)")
    ap.add_argument(
        "--ghz-cpu-list", help="pin ghz to these cores (taskset -c LIST), e.g. 1 when the servers are on 0"
    )
    ap.add_argument(
        "--watch-pid",
        action="append",
        default=[],
        metavar="NAME=PID",
        help="server process whose CPU time is recorded per scenario (repeatable): gives calls per "
        "server CPU-second, which other load on a shared machine distorts far less than rps",
    )
    ap.add_argument("--note", default="", help="free text recorded in summary.json and results.md")
    ap.add_argument("--budget-s", type=float, default=900, help="stop starting scenarios after this long")
    ap.add_argument(
        "--synthetic-vectors",
        action="store_true",
        help="without an encoder, use random unit vectors under the model 'ghz-bench-synthetic' "
        "(only for a scratch search service: the store learns its model from the first write)",
    )
    ap.add_argument("--keep-data", action="store_true", help="do not delete what write scenarios stored")
    ap.add_argument(
        "--tls-dir",
        type=Path,
        help="suite certificate directory: call the encoder and search over mutual TLS (as `make run` "
        "serves them; .data/certs there), presenting --tls-identity's certificate",
    )
    ap.add_argument(
        "--tls-identity",
        default="gateway",
        help="identity presented to encoder and search (default gateway: the only one their default "
        "policy lets call data methods; docs/SECURITY.md)",
    )
    ap.add_argument("--keep-request-data", action="store_true", help="keep ghz's request data in OUT/data")
    args = ap.parse_args(argv)

    targets = {
        "gateway": args.gateway,
        "encoder": args.encoder,
        "search": args.search,
        "echo": args.echo,
        "echo_asyncio": args.echo_asyncio,
    }
    if args.tls_dir is not None:
        from services.common.tls import CertFiles

        for addr in (args.encoder, args.search):
            if addr:
                INTERNAL_TLS[addr] = CertFiles.in_dir(args.tls_dir, args.tls_identity)
    watched = parse_watch(args.watch_pid)
    for addr in targets.values():
        if addr:
            check_loopback(addr)
    suite = json.loads(args.suite.read_text())
    profile = suite["profiles"][args.profile]
    scenarios = [
        s
        for s in suite["scenarios"]
        if not args.only or any(fnmatch.fnmatch(s["name"], pat) for pat in args.only)
    ]
    started = time.time()
    loadavg_start = os.getloadavg()
    run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    out = args.out or REPO / "bench/results" / f"ghz-{run_id}"
    (out / "raw").mkdir(parents=True, exist_ok=True)
    # Request data files hold base64 images (several MB each): kept only on request.
    data_dir = out / "data" if args.keep_request_data else Path(tempfile.mkdtemp(prefix="ghz-data-"))
    data_dir.mkdir(exist_ok=True)
    if not args.keep_request_data:
        atexit.register(shutil.rmtree, data_dir, True)

    ghz = ghz_binary(args.ghz)
    ghz_version = tool_version(ghz)
    protoset, health_protoset = build_protosets(out)
    unreachable = {
        name: healthy(addr) if addr else f"no --{name.replace('_', '-')} address given"
        for name, addr in targets.items()
    }
    live = {name for name, why in unreachable.items() if why is None}
    for name, why in unreachable.items():
        if why:
            say(f"{name}: {why}: its scenarios are skipped")

    images = workload.load_images(48)
    ctx = Context(
        run_id=run_id.lower(),
        images=images,
        ingest_images=workload.load_images(16, ingestable_only=True),
        queries=workload.load_queries(queries_needed(scenarios)),
        vectors=None,
    )
    vector_note = None
    if any("vectors" in s.get("needs", []) for s in scenarios):
        if "encoder" in live:
            say("embedding the image and query samples with the encoder")
            ctx.vectors = encoder_vectors(targets["encoder"], ctx.images, ctx.queries)
        elif args.synthetic_vectors:
            ctx.vectors = synthetic_vectors(len(ctx.images), len(ctx.queries))
        else:
            vector_note = (
                "needs embeddings: start the encoder (or pass --synthetic-vectors for a scratch store)"
            )

    results: list[dict[str, Any]] = []
    by_name: dict[str, dict[str, Any]] = {}
    for sc in scenarios:
        rec: dict[str, Any] = {"name": sc["name"], "target": sc["target"], "call": sc["call"]}
        results.append(rec)
        by_name[sc["name"]] = rec
        skip = unreachable[sc["target"]]
        if not skip and "vectors" in sc.get("needs", []) and ctx.vectors is None:
            skip = vector_note
        if not skip and "ingested" in sc.get("needs", []) and not ctx.ingested_ids:
            skip = "needs assets written by gateway.ingest in this run"
        if not skip and "echo_page" in sc.get("needs", []) and not args.echo_page:
            skip = "needs --echo-page (an echo server started with --page-file)"
        if not skip and sc.get("auth") and not args.api_key:
            skip = "needs --api-key"
        if not skip and time.time() - started > args.budget_s:
            skip = f"run budget of {args.budget_s:g}s spent"
        if skip:
            rec["skipped"] = skip
            say(f"skip {sc['name']}: {skip}")
            continue

        scale = float(profile.get("scale", 1.0))
        n = max(1, round(sc["total"] * scale))
        data = build_data(sc["data"]["kind"], sc["data"], ctx, sc["name"])
        if sc.get("distinct") and isinstance(data, list):
            n = min(n, len(data))  # every request different (a cold-cache scenario stays cold)
        concurrency = min(sc["concurrency"], int(profile.get("max_concurrency", sc["concurrency"])), n)
        max_duration = min(float(sc["max_duration_s"]), float(profile.get("max_duration_cap_s", 60)))
        data_file = data_dir / f"{sc['name']}.json"
        data_file.write_text(json.dumps(data))
        metadata = {"authorization": f"Bearer {args.api_key}"} if sc.get("auth") else {}
        use_protoset = health_protoset if sc["call"].startswith("grpc.health.") else protoset
        rec.update(
            concurrency=concurrency,
            requested=n,
            max_duration_s=max_duration,
            data_items=len(data) if isinstance(data, list) else 1,
        )
        try:
            warmup = int(profile.get("warmup", 0))
            if sc.get("warmup") == "all" and isinstance(data, list):
                # A cached scenario: one pass over every request first, so that all are served warm.
                warmup = max(warmup, len(data))
            # No warm-up for writes (it would store extra data) or where it would pre-fill a cache.
            if warmup and not sc.get("writes") and sc.get("warmup", True):
                run_ghz(
                    ghz,
                    sc,
                    targets[sc["target"]],
                    use_protoset,
                    data_file,
                    metadata,
                    warmup,
                    min(concurrency, warmup),
                    max_duration,
                    args.cpus,
                    None,
                    args.ghz_cpu_list,
                )
            say(f"run {sc['name']}: n={n} c={concurrency} max {max_duration:g}s")
            cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            client_before = children_cpu_s()
            report = run_ghz(
                ghz,
                sc,
                targets[sc["target"]],
                use_protoset,
                data_file,
                metadata,
                n,
                concurrency,
                max_duration,
                args.cpus,
                out / "raw" / f"{sc['name']}.json",
                args.ghz_cpu_list,
            )
            cpu_after = {name: cpu_seconds(pid) for name, pid in watched.items()}
            client_cpu_s = children_cpu_s() - client_before
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
            rec["failed"] = str(err)[-2000:]
            say(f"{sc['name']} failed: {rec['failed']}")
            continue
        rec.update(summarise(report, sc.get("expect", "OK")))
        rec["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        # ghz's own CPU over its run, as a share of the cores it may use: near 1.0 the load generator,
        # not the server, set the rps (it decodes every response with dynamic protobuf).
        rec["client_cpu_s"] = round(client_cpu_s, 3)
        if rec["wall_s"]:
            rec["client_cpu_share"] = round(client_cpu_s / rec["wall_s"] / max(1, args.cpus), 3)
        if watched:
            used = {
                name: round(cpu_after[name] - before, 3)  # type: ignore[operator]
                for name, before in cpu_before.items()
                if before is not None and cpu_after.get(name) is not None
            }
            rec["server_cpu_s"] = used
            total = sum(used.values())
            rec["calls_per_server_cpu_s"] = round(rec["count"] / total, 1) if total > 0 else None
        if sc["data"]["kind"] == "gateway_ingest":
            attempted = written_ids(ctx.run_id, n, sc["data"]["images_per_stream"])
            ctx.ingested_ids += stored_ids(targets["gateway"], args.api_key, attempted)
            rec["items_per_call"] = sc["data"]["images_per_stream"]
            rec["items_stored"] = f"{len(ctx.ingested_ids)}/{len(attempted)}"
        if sc["data"]["kind"] == "search_upsert":
            ctx.upserted_ids += written_ids(ctx.run_id, n, sc["data"]["batch"])
            rec["items_per_call"] = sc["data"]["batch"]
        if sc["data"]["kind"] in ("encode_texts", "encode_images"):
            rec["items_per_call"] = sc["data"]["batch"]
        if sc["data"]["kind"] == "stream_encode_images":
            rec["items_per_call"] = sc["data"]["images"]
        lat = rec["latency_ms"]
        say(
            f"  {rec['rps']:.1f} rps, p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} ms, "
            f"statuses {rec['status_distribution']}"
        )

    # Ratios against each scenario's baseline (same service, same run).
    for sc in scenarios:
        rec, base = by_name[sc["name"]], by_name.get(sc.get("baseline", ""))
        if base and "rps" in rec and base.get("rps") and base["latency_ms"]["p50"]:
            rec["baseline"] = base["name"]
            rec["rps_vs_baseline"] = round(rec["rps"] / base["rps"], 4)
            p50 = rec["latency_ms"]["p50"] or rec["latency_all_ms"]["p50"]
            rec["p50_vs_baseline"] = round(p50 / base["latency_ms"]["p50"], 2) if p50 else None

    cleaned = {} if args.keep_data else cleanup(ctx, args)
    summary = {
        "run_id": run_id,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "profile": args.profile,
        "ghz": ghz_version,
        "ghz_cpus": args.cpus,
        "ghz_cpu_list": args.ghz_cpu_list,
        "note": args.note,
        "watched_pids": watched,
        "host": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_start": loadavg_start,
            "loadavg_end": os.getloadavg(),
        },
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "targets": {k: v for k, v in targets.items() if v},
        "unreachable": {k: v for k, v in unreachable.items() if v},
        "vectors": None
        if ctx.vectors is None
        else {"origin": ctx.vectors.origin, "model": ctx.vectors.model, "dim": ctx.vectors.dim},
        "data": {
            "images": len(ctx.images),
            "ingest_images": len(ctx.ingest_images),
            "queries": len(ctx.queries),
            "manifest": str(workload.MANIFEST.relative_to(REPO)),
        },
        "cleanup": cleaned,
        "scenarios": results,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_table(results)
    say(f"wrote {out / 'summary.json'} ({summary['wall_s']}s)")
    return 0


def print_table(results: list[dict[str, Any]]) -> None:
    print(
        f"{'scenario':32} {'rps':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9} {'x base':>7} "
        f"{'calls/cpu-s':>11}  statuses"
    )
    for r in results:
        if "rps" not in r:
            print(f"{r['name']:32} {'-':>9} {'':>39}  {r.get('skipped') or r.get('failed')}")
            continue
        lat = r["latency_ms"] if r["latency_ms"]["n"] else r["latency_all_ms"]
        ratio = r.get("p50_vs_baseline")
        per_cpu = r.get("calls_per_server_cpu_s")
        print(
            f"{r['name']:32} {r['rps']:9.1f} {lat['p50'] or 0:9.2f} {lat['p95'] or 0:9.2f} "
            f"{lat['p99'] or 0:9.2f} "
            f"{ratio if ratio is not None else '':>7} {per_cpu if per_cpu is not None else '':>11}  "
            f"{r['status_distribution']}"
        )


if __name__ == "__main__":
    sys.exit(main())
