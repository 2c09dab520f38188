"""Vector compression in Weaviate: recall@10, query latency and memory with and without it, one run
(issue 20 part 4; figures in docs/SCALING.md, section "Vector compression").

    python -m bench.compression                                  # 1,000,000 vectors, every config
    python -m bench.compression --n 200000 --configs none,rq8,pq --queries 300 --json out.json

For each config a fresh single-node Weaviate (the pinned binary, devstack/weaviate_cluster.py, in a
temporary directory, its own ports) gets one collection with an HNSW index (Weaviate's defaults:
efConstruction 128, maxConnections 32, dynamic ef) and that config's quantizer set at creation; the same
N vectors are imported in batches, then the same queries are sent one at a time (near-vector, limit 10,
gRPC) and compared with the exact top 10 (brute force in numpy, cosine). Memory is read after the
queries: the process's resident set (VmRSS) and the Go heap in use (Prometheus
`go_memstats_heap_inuse_bytes`). The node is stopped and its data removed before the next config.

The vectors are SYNTHETIC, labelled so in every output: a Gaussian mixture on the unit sphere (cluster
centres uniform on the sphere, each vector a centre plus isotropic noise, normalised), 384 dimensions
like the photo package's semantic vector. No real embedding set of this size exists here; real
embeddings have more structure (lower intrinsic dimension), which usually helps quantizers, so these
recalls are a conservative reading, not a promise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import weaviate
from weaviate.classes.config import Configure, Reconfigure
from weaviate.classes.init import Auth
from weaviate.classes.query import MetadataQuery

from devstack.common import HOST
from devstack.ports import PortPicker
from devstack.versions import WEAVIATE_VERSION
from devstack.weaviate import auth_headers, weaviate_api_key
from devstack.weaviate_cluster import WeaviateCluster

COLLECTION = "CompressionBench"
K = 10
CHUNK = 10_000  # vectors generated (and sent) per step: bounds the Python-side copies

# PQ needs training vectors. Set at creation, Weaviate 1.39 trains it only with asynchronous indexing
# (AutoPQ); here it is switched on after the import instead (Weaviate's documented path for an existing
# collection): it trains on the first `training_limit` vectors and compresses the rest; the graph built
# uncompressed stays. 96 segments of 4 dimensions, 256 centroids = 96 bytes a vector.
PQ_SEGMENTS = 96


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one config is reached: a quantizer at creation, or one switched on after the import."""

    label: str
    at_creation: Callable[[int], Any] | None = None
    after_import: Callable[[int], Any] | None = None


PLANS: dict[str, Plan] = {
    "none": Plan("no compression (float32)"),
    "rq8": Plan("RQ 8-bit", at_creation=lambda n: Configure.VectorIndex.Quantizer.rq(bits=8)),
    "rq1": Plan("RQ 1-bit", at_creation=lambda n: Configure.VectorIndex.Quantizer.rq(bits=1)),
    "bq": Plan("BQ", at_creation=lambda n: Configure.VectorIndex.Quantizer.bq()),
    "pq": Plan(
        f"PQ {PQ_SEGMENTS} segments x 256 centroids",
        after_import=lambda n: Reconfigure.VectorIndex.Quantizer.pq(
            segments=PQ_SEGMENTS, centroids=256, training_limit=min(100_000, n)
        ),
    ),
}
COMPRESSION_TIMEOUT_S = 600.0


@dataclasses.dataclass
class ConfigReport:
    config: str
    quantizer: str
    n: int
    compressed: bool | None = None
    import_s: float = 0.0
    import_rate_per_s: float = 0.0
    compress_s: float | None = None  # PQ: from the switch until the shard reports compressed
    failed_objects: int = 0
    recall_at_10: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    rss_mib: float = 0.0
    heap_inuse_mib: float = 0.0
    # Heap in use after the queries minus before the import, per vector: what each vector cost.
    heap_per_vector_bytes: float = 0.0
    error: str | None = None


# ---- synthetic data ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MixtureSpec:
    """A Gaussian mixture on the unit sphere: ``clusters`` centres, per-dimension noise ``spread``."""

    dim: int
    clusters: int
    spread: float
    seed: int

    def centres(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return normalised(rng.standard_normal((self.clusters, self.dim), dtype=np.float32))

    def sample(self, n: int, seed_offset: int) -> np.ndarray:
        """n vectors; ``seed_offset`` separates the data set from the queries."""
        rng = np.random.default_rng(self.seed + 1 + seed_offset)
        centres = self.centres()
        labels = rng.integers(0, self.clusters, size=n)
        # Noise per dimension scaled by 1/sqrt(dim): `spread` is the noise norm relative to a centre's.
        noise = rng.standard_normal((n, self.dim), dtype=np.float32) * (self.spread / np.sqrt(self.dim))
        return normalised(centres[labels] + noise)


def normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def dataset(spec: MixtureSpec, n: int) -> np.ndarray:
    """The N data vectors, generated chunk by chunk (each chunk its own seed: reproducible for any N)."""
    out = np.empty((n, spec.dim), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        out[start:stop] = spec.sample(stop - start, seed_offset=1 + start // CHUNK)
    return out


def queries_for(spec: MixtureSpec, count: int) -> np.ndarray:
    return spec.sample(count, seed_offset=0)


# ---- real embeddings (a small sanity check) ---------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".webp", ".jpg", ".jpeg"}


def photo_embeddings(images_dir: Path, package_dir: Path) -> np.ndarray:
    """The photo package's semantic vectors of every image under images_dir, preprocessed as the
    encoder does (its own decode, size and colour mode from the package card)."""
    import onnxruntime as ort

    from services.encoder.preprocess import decode_image

    card = json.loads((package_dir / "package.json").read_text())
    prep = card["preprocessing"]["image"]
    size, color_mode = int(prep["size"]), str(prep["color_mode"])
    session = ort.InferenceSession(str(package_dir / "image.onnx"), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    paths = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    vectors: list[np.ndarray] = []
    for start in range(0, len(paths), 32):
        pixels = np.stack(
            [decode_image(p.read_bytes(), size, 64_000_000, color_mode) for p in paths[start : start + 32]]
        )
        outputs = session.run(["semantic"], {input_name: pixels})
        vectors.append(np.asarray(outputs[0], dtype=np.float32))
    return normalised(np.concatenate(vectors))


def held_out(vectors: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(data, queries): ``count`` random vectors taken out of the set to query it with."""
    order = np.random.default_rng(seed).permutation(len(vectors))
    return vectors[order[count:]], vectors[order[:count]]


# ---- ground truth and recall ------------------------------------------------------------------------


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Indices of the k most similar data vectors per query (cosine = dot product: all are unit)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(data), 100_000):
        block = data[start : start + 100_000]
        scores = queries @ block.T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + start], axis=1)
        keep = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_ids = np.take_along_axis(merged_ids, keep, axis=1)
    return best_ids


def recall_at_k(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean share of each query's exact top k that the index returned (order ignored)."""
    k = truth.shape[1]
    hits = sum(len(set(ids[:k]) & set(row.tolist())) for ids, row in zip(found, truth, strict=True))
    return hits / (k * len(truth))


def quantile_ms(samples_s: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(samples_s), q)) * 1000.0 if samples_s else 0.0


# ---- one Weaviate, one config ------------------------------------------------------------------------


def object_id(index: int) -> uuid.UUID:
    return uuid.UUID(int=index + 1)


def batches(data: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(data), CHUNK):
        yield start, data[start : start + CHUNK]


def import_vectors(collection: Any, data: np.ndarray, batch_size: int) -> int:
    """Send every vector; returns the count Weaviate rejected."""
    with collection.batch.fixed_size(batch_size=batch_size, concurrent_requests=2) as batch:
        for start, chunk in batches(data):
            for offset, vector in enumerate(chunk):
                batch.add_object(properties={}, uuid=object_id(start + offset), vector=vector.tolist())
            if batch.number_errors:
                break
    return len(collection.batch.failed_objects)


def search_all(collection: Any, queries: np.ndarray, warmup: int) -> tuple[list[list[int]], list[float]]:
    for vector in queries[:warmup]:
        collection.query.near_vector(near_vector=vector.tolist(), limit=K)
    found: list[list[int]] = []
    latencies: list[float] = []
    for vector in queries:
        began = time.perf_counter()
        result = collection.query.near_vector(
            near_vector=vector.tolist(), limit=K, return_properties=[], return_metadata=MetadataQuery()
        )
        latencies.append(time.perf_counter() - began)
        found.append([obj.uuid.int - 1 for obj in result.objects])
    return found, latencies


def shard_compressed(http_port: int) -> bool | None:
    """Whether Weaviate reports the collection's shard as compressed (None when it does not say)."""
    with urllib.request.urlopen(
        urllib.request.Request(f"http://{HOST}:{http_port}/v1/nodes?output=verbose", headers=auth_headers()),
        timeout=10,
    ) as r:
        nodes = json.load(r)["nodes"]
    for node in nodes:
        for shard in node.get("shards") or []:
            if shard.get("class") == COLLECTION and "compressed" in shard:
                return bool(shard["compressed"])
    return None


def metric_bytes(metrics_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://{HOST}:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def rss_bytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    return 0.0


def import_groups(configs: list[str]) -> list[list[str]]:
    """Configs that share one import: PQ is switched on after an uncompressed import, so when "none" is
    measured too, PQ follows it on the same collection (one import fewer)."""
    groups = [[name] for name in configs if name != "pq"]
    if "pq" in configs:
        shared = next((g for g in groups if g == ["none"]), None)
        if shared is None:
            groups.append(["pq"])
        else:
            shared.append("pq")
    return groups


def wait_compressed(http_port: int) -> float:
    began = time.monotonic()
    while shard_compressed(http_port) is not True:
        if time.monotonic() - began > COMPRESSION_TIMEOUT_S:
            raise TimeoutError(f"not compressed after {COMPRESSION_TIMEOUT_S:.0f} s")
        time.sleep(1.0)
    return time.monotonic() - began


def measure(
    report: ConfigReport,
    collection: Any,
    queries: np.ndarray,
    truth: np.ndarray,
    cluster: WeaviateCluster,
    metrics_port: int,
    warmup: int,
) -> None:
    report.compressed = shard_compressed(cluster.ports[0].http)
    found, latencies = search_all(collection, queries, warmup)
    report.recall_at_10 = recall_at_k(found, truth)
    report.p50_ms = quantile_ms(latencies, 0.50)
    report.p99_ms = quantile_ms(latencies, 0.99)
    proc = cluster._procs[0]
    report.rss_mib = rss_bytes(proc.pid) / 2**20 if proc else 0.0
    report.heap_inuse_mib = metric_bytes(metrics_port, "go_memstats_heap_inuse_bytes") / 2**20


def run_group(
    names: list[str], data: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace
) -> list[ConfigReport]:
    """One fresh node, one import, then each config of the group measured in turn."""
    reports = [ConfigReport(config=name, quantizer=PLANS[name].label, n=len(data)) for name in names]
    first = PLANS[names[0]]
    picker = PortPicker()
    metrics_port = picker.one()
    picker.release()
    # The node inherits this process's environment (devstack/weaviate_cluster.py copies it).
    os.environ.update(
        PROMETHEUS_MONITORING_ENABLED="true",
        PROMETHEUS_MONITORING_PORT=str(metrics_port),
        RAFT_TIMEOUTS_MULTIPLIER="1",  # one node: elect itself at once, not after 5 s
        IMAGESEARCH_WEAVIATE_GOMEMLIMIT=args.gomemlimit,
    )
    with tempfile.TemporaryDirectory(prefix="compression-bench-") as tmp:
        cluster = WeaviateCluster(Path(tmp), nodes=1)
        with cluster:
            ports = cluster.ports[0]
            client = weaviate.connect_to_local(
                host=HOST,
                port=ports.http,
                grpc_port=ports.grpc,
                skip_init_checks=True,
                auth_credentials=Auth.api_key(weaviate_api_key()),
            )
            current = reports[0]
            try:
                collection = client.collections.create(
                    COLLECTION,
                    vector_config=Configure.Vectors.self_provided(
                        quantizer=first.at_creation(len(data)) if first.at_creation else None,
                        vector_index_config=Configure.VectorIndex.hnsw(),
                    ),
                )
                heap_before = metric_bytes(metrics_port, "go_memstats_heap_inuse_bytes")
                began = time.perf_counter()
                failed = import_vectors(collection, data, args.batch_size)
                import_s = time.perf_counter() - began
                for report in reports:
                    current = report
                    report.failed_objects = failed
                    report.import_s = import_s
                    report.import_rate_per_s = len(data) / import_s
                    plan = PLANS[report.config]
                    if plan.after_import is not None:
                        collection.config.update(
                            vector_config=Reconfigure.Vectors.update(
                                name="default",
                                vector_index_config=Reconfigure.VectorIndex.hnsw(
                                    quantizer=plan.after_import(len(data))
                                ),
                            )
                        )
                        report.compress_s = wait_compressed(ports.http)
                    measure(report, collection, queries, truth, cluster, metrics_port, args.warmup)
                    report.heap_per_vector_bytes = (report.heap_inuse_mib * 2**20 - heap_before) / len(data)
            except Exception as exc:  # a config failing (e.g. a quantizer this version lacks) is reported
                current.error = f"{type(exc).__name__}: {exc}"[:400]
            finally:
                client.close()
    return reports


# ---- output -----------------------------------------------------------------------------------------


def note(report: ConfigReport) -> str:
    if report.compress_s is None:
        return "quantizer set at creation" if report.config != "none" else ""
    return (
        f"switched on after the uncompressed import, compressed in {report.compress_s:.0f} s; "
        "same process as the row before"
    )


def table(reports: list[ConfigReport]) -> str:
    lines = [
        "| config | compressed | import (vectors/s) | recall@10 | p50 | p99 | RSS | Go heap in use "
        "| heap / vector | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        if r.error:
            lines.append(f"| {r.quantizer} | error: {r.error} |  |  |  |  |  |  |  |  |")
            continue
        lines.append(
            f"| {r.quantizer} | {r.compressed} | {r.import_rate_per_s:,.0f} | {r.recall_at_10:.3f} | "
            f"{r.p50_ms:.2f} ms | {r.p99_ms:.2f} ms | {r.rss_mib:,.0f} MiB | {r.heap_inuse_mib:,.0f} MiB | "
            f"{r.heap_per_vector_bytes:,.0f} B | {note(r)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors imported per config")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--configs", default="none,rq8,pq,bq,rq1", help=f"of {','.join(PLANS)}")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--spread", type=float, default=1.0, help="noise norm relative to a centre's")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--gomemlimit", default="8GiB")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--real-images",
        type=Path,
        help="also run every config on the photo package's real embeddings of these images (a small "
        "sanity check; 100 of them held out as queries), e.g. ~/.cache/imagesearch/eval/photo/gallery",
    )
    parser.add_argument("--package", type=Path, default=Path("models/photo/package"))
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs.split(",") if c not in PLANS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; known: {', '.join(PLANS)}")
    return args


def run_all(
    data: np.ndarray, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace
) -> list[ConfigReport]:
    reports: list[ConfigReport] = []
    for group in import_groups(args.configs.split(",")):
        for report in run_group(group, data, queries, truth, args):
            reports.append(report)
            print(json.dumps(dataclasses.asdict(report)), flush=True)
    return reports


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # `timeout` sends SIGTERM: exit through the `with` blocks, so the Weaviate node is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    spec = MixtureSpec(dim=args.dim, clusters=args.clusters, spread=args.spread, seed=args.seed)
    data_label = (
        f"SYNTHETIC: Gaussian mixture on the unit sphere, {args.n:,} x {args.dim}, "
        f"{args.clusters} clusters, spread {args.spread}, seed {args.seed}"
    )
    print(data_label, flush=True)
    began = time.perf_counter()
    data = dataset(spec, args.n)
    queries = queries_for(spec, args.queries)
    truth = exact_top_k(data, queries)
    print(f"data and exact top {K} ready in {time.perf_counter() - began:.1f} s", flush=True)
    reports = run_all(data, queries, truth, args)
    document: dict[str, Any] = {
        "weaviate": WEAVIATE_VERSION,
        "data": data_label,
        "synthetic": True,
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "reports": [dataclasses.asdict(r) for r in reports],
    }
    real_reports: list[ConfigReport] = []
    if args.real_images:
        vectors = photo_embeddings(args.real_images.expanduser(), args.package)
        real_data, real_queries = held_out(vectors, min(100, len(vectors) // 5), args.seed)
        real_label = (
            f"REAL: photo package semantic vectors of {len(vectors)} images under {args.real_images} "
            f"({len(real_data)} indexed, {len(real_queries)} held out as queries)"
        )
        print(real_label, flush=True)
        real_reports = run_all(real_data, real_queries, exact_top_k(real_data, real_queries), args)
        document["real"] = {"data": real_label, "reports": [dataclasses.asdict(r) for r in real_reports]}
    print(f"\nWeaviate {WEAVIATE_VERSION}, HNSW defaults, one node; data: {data_label}")
    print(f"{args.queries} queries, one at a time, limit {K}, near-vector over gRPC\n")
    print(table(reports))
    if real_reports:
        print(f"\n{document['real']['data']}\n")
        print(table(real_reports))
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document))
    return 1 if any(r.error for r in reports + real_reports) else 0


if __name__ == "__main__":
    sys.exit(main())
