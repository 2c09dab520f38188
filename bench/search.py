"""Search benchmark: index N synthetic assets into the embedded backend and into Weaviate, then report
upserts/s, ANN recall@10 against exact brute force (numpy), and hybrid query latency/QPS uncached and
cached, inside the service (the domain core, no gRPC) and through the service (gRPC on loopback).

    python -m bench.search --n 100000                      # both backends (starts Redis + Weaviate)
    python -m bench.search --n 20000 --backends embedded   # quick

Synthetic data (dimension 256 by default), captions/tags drawn from a Zipf-distributed word list.
Two vector distributions (`--vectors`, each gets its own index and its own report entry):
- iid: independent uniformly random unit vectors. No structure at all: the worst case for HNSW (every
  point is nearly equidistant from every other), and unlike any real embedding.
- clustered: a stand-in for image embeddings (CLIP-like vectors concentrate near a low-dimensional
  manifold, in clusters of similar images). 1000 Gaussian cluster centres in a 32-d latent space,
  each point = its centre + Gaussian noise (0.5 of the centres' spread), mapped to 256-d by a fixed random
  linear map, plus small isotropic 256-d noise (std 0.05 per coordinate), L2-normalised. Intrinsic
  dimension about 32. Query vectors are fresh draws from the same distribution (not corpus points).
  This is synthetic: it is easier than iid and probably easier than real embeddings; real CLIP data
  should be measured before trusting recall figures from it.
Bounded: every phase has a count and the script prints the elapsed time of each. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from imagesearch.v1 import common_pb2, search_pb2, search_pb2_grpc

from devstack.weaviate import weaviate_api_key
from services.search.backends import make_backend
from services.search.cache import make_cache
from services.search.core import SearchCore
from services.search.domain import AssetDoc, AssetRecord, Fusion, ModelRef
from services.search.settings import SearchSettings

REPO = Path(__file__).resolve().parents[1]

MODEL = ModelRef("bench-model", "1")
WORDS = [f"word{i}" for i in range(5000)]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(lat_s: list[float], wall_s: float) -> dict[str, float]:
    ms = [x * 1000 for x in lat_s]
    return {
        "qps": round(len(lat_s) / wall_s, 1),
        "p50_ms": round(pct(ms, 50), 3),
        "p95_ms": round(pct(ms, 95), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


LATENT_DIM = 32
CLUSTERS = 1000


def unit_vectors(kind: str, count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """`count` unit vectors from the `kind` distribution (see the module docstring)."""
    if kind == "iid":
        v = rng.standard_normal((count, dim)).astype(np.float32)
    elif kind == "clustered":
        fixed = np.random.default_rng(7)  # the same centres and map for corpus and queries
        lift = fixed.standard_normal((LATENT_DIM, dim)).astype(np.float32) / np.sqrt(LATENT_DIM)
        centres = fixed.standard_normal((CLUSTERS, LATENT_DIM)).astype(np.float32)
        z = centres[rng.integers(0, CLUSTERS, count)]
        z += 0.5 * rng.standard_normal((count, LATENT_DIM)).astype(np.float32)
        v = z @ lift + 0.05 * rng.standard_normal((count, dim)).astype(np.float32)
    else:
        raise ValueError(f"unknown vector distribution {kind!r}")
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


class Corpus:
    def __init__(self, n: int, dim: int, seed: int = 1, vectors: str = "iid") -> None:
        rng = np.random.default_rng(seed)
        self.kind = vectors
        self.demo = None
        if vectors == "demo":  # real encoder output, at most as many assets as demo images
            from bench import demo_vectors

            self.demo = demo_vectors.load()
            n = min(n, len(self.demo.images))
            dim = self.demo.images.shape[1]
            self.vectors = self.demo.images[:n]
        else:
            self.vectors = unit_vectors(vectors, n, dim, rng)
        p = 1.0 / np.arange(1, len(WORDS) + 1)
        p /= p.sum()
        lengths = rng.integers(4, 16, n)
        words = rng.choice(len(WORDS), size=int(lengths.sum()), p=p)
        self.captions = []
        at = 0
        for ln in lengths:
            self.captions.append(" ".join(WORDS[w] for w in words[at : at + ln]))
            at += ln
        self.tags = [
            tuple(WORDS[w] for w in rng.choice(200, size=int(rng.integers(0, 4)), replace=False))
            for _ in range(n)
        ]
        if self.demo is not None:
            self.captions, self.tags = self.demo.captions[:n], self.demo.tags[:n]
        self.widths = rng.integers(64, 4096, n)
        self.n, self.dim = n, dim

    def query_vectors(self, count: int, rng: np.random.Generator) -> tuple[list[str | None], np.ndarray]:
        """Query vectors from the corpus's distribution, with their query text when it has one."""
        if self.demo is None:
            return [None] * count, unit_vectors(self.kind, count, self.dim, rng)
        pick = rng.integers(0, len(self.demo.query_texts), count)
        return [self.demo.query_texts[i] for i in pick], self.demo.query_vectors[pick]

    def records(self, start: int, stop: int) -> list[AssetRecord]:
        return [
            AssetRecord(
                AssetDoc(
                    asset_id=f"asset-{i}",
                    caption=self.captions[i],
                    tags=self.tags[i],
                    width=int(self.widths[i]),
                    height=int(self.widths[i]) // 2,
                    owner=f"owner{i % 20}",
                    source="bench",
                    embedding_model=MODEL,
                ),
                self.vectors[i].copy(),
            )
            for i in range(start, stop)
        ]


def queries(corpus: Corpus, count: int, seed: int = 2) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        doc = int(rng.integers(0, corpus.n))
        texts, vecs = corpus.query_vectors(1, rng)
        out.append((texts[0] or " ".join(corpus.captions[doc].split()[:3]), vecs[0]))
    return out


async def index(core: SearchCore, corpus: Corpus, batch: int, budget_s: float) -> dict[str, Any]:
    start = time.perf_counter()
    done = 0
    last = start
    while done < corpus.n and time.perf_counter() - start < budget_s:
        stop = min(corpus.n, done + batch)
        summary_ = await core.upsert("bench", corpus.records(done, stop))
        failed = [o for o in summary_.outcomes if o.error is not None]
        if failed:
            raise RuntimeError(f"upsert failed: {failed[0]}")
        done = stop
        if time.perf_counter() - last > 60:
            last = time.perf_counter()
            print(f"  indexed {done} in {last - start:.0f}s", flush=True)
    took = time.perf_counter() - start
    return {"indexed": done, "seconds": round(took, 1), "upserts_per_s": round(done / took, 1)}


def wait_until_quiet(pid: int, cores: float = 0.1, quiet_s: int = 3, cap_s: float = 300) -> float:
    """Seconds until process ``pid`` used under ``cores`` CPU for ``quiet_s`` seconds in a row (at most
    ``cap_s``). Weaviate flushes and compacts its LSM segments after a bulk import; queries timed during
    that measure the import, not the steady state a query service runs in."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu_s() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    start = time.perf_counter()
    quiet = 0
    last = cpu_s()
    while quiet < quiet_s and time.perf_counter() - start < cap_s:
        time.sleep(1)
        now = cpu_s()
        quiet = quiet + 1 if now - last < cores else 0
        last = now
    return round(time.perf_counter() - start, 1)


async def plan(core: SearchCore, text: str, vec: np.ndarray | None, alpha: float, limit: int = 10) -> Any:
    return await core.plan(
        text=text, vector=vec, vector_model=MODEL if vec is not None else None, alpha=alpha,
        fusion=Fusion.RELATIVE_SCORE, filter=None, limit=limit, offset=0, window=0, keyword_fields=[],
        include_vectors=False,
    )  # fmt: skip


async def recall_at_10(
    core: SearchCore, corpus: Corpus, indexed: int, n_queries: int, lat: list[float] | None = None
) -> float:
    """Recall@10 of pure vector queries (alpha 1, through the domain core, uncached) against exact brute
    force; `lat` collects each query's latency (the brute force excluded)."""
    rng = np.random.default_rng(3)
    base = corpus.vectors[:indexed]
    hits = 0
    for q in corpus.query_vectors(n_queries, rng)[1]:
        exact = set(np.argpartition(-(base @ q), 10)[:10].tolist())
        p = await plan(core, "", q, 1.0)
        t = time.perf_counter()
        res = await core.query("bench", p, skip_cache=True)
        if lat is not None:
            lat.append(time.perf_counter() - t)
        got = {int(h.doc.asset_id.split("-")[1]) for h in res.hits}
        hits += len(exact & got)
    return hits / (10 * n_queries)


async def set_query_ef(backend: Any, kind: str, ef: int) -> None:
    """Change the graph's query-time candidate list (ef) of the bench tenant / collection in place."""
    if kind == "embedded":
        from dataclasses import replace

        tenant = backend._tenants["bench"]
        tenant.hnsw = replace(tenant.hnsw, ef_search=ef)
        return
    from weaviate.classes.config import Reconfigure

    from services.search.backends.weaviate import VECTOR_NAME

    col = backend._client.collections.get(backend._name)
    await col.config.update(
        vector_config=[
            Reconfigure.Vectors.update(
                name=VECTOR_NAME, vector_index_config=Reconfigure.VectorIndex.hnsw(ef=ef)
            )
        ]
    )
    await asyncio.sleep(2)  # the schema change reaches the tenant shards asynchronously


async def time_calls(fn: Callable[[int], Awaitable[Any]], count: int) -> dict[str, float]:
    lat = []
    start = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        await fn(i)
        lat.append(time.perf_counter() - t)
    return summary(lat, time.perf_counter() - start)


async def inside(core: SearchCore, qs: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    plans = [await plan(core, t, v, 0.75) for t, v in qs]
    for p in plans[:20]:  # warm-up
        await core.query("bench", p, skip_cache=True)
    uncached = await time_calls(lambda i: core.query("bench", plans[i], skip_cache=True), len(plans))
    await core.query("bench", plans[0])
    await core.query("bench", plans[0])
    hits = 0

    async def repeat(_: int) -> None:
        nonlocal hits
        hits += (await core.query("bench", plans[0])).cached

    cached = await time_calls(repeat, len(plans))
    # A hit ratio below 1 means the cache was bypassed for some calls (e.g. a Redis command over its
    # timeout on a loaded machine): those calls are in the figures as misses, so report it.
    cached["hit_ratio"] = round(hits / len(plans), 3)
    return {"hybrid_uncached": uncached, "hybrid_cached": cached}


def through_grpc(address: str, qs: list[tuple[str, np.ndarray]], concurrency: int) -> dict[str, Any]:
    def req(i: int, skip: bool) -> search_pb2.QueryRequest:
        text, v = qs[i % len(qs)]
        emb = common_pb2.Embedding(
            values=v.astype("<f4").tobytes(),
            model=common_pb2.ModelRef(name=MODEL.name, version=MODEL.version),
        )
        return search_pb2.QueryRequest(tenant="bench", text=text, vector=emb, alpha=0.75, skip_cache=skip)

    out: dict[str, Any] = {}

    async def run() -> None:
        async with grpc.aio.insecure_channel(address) as ch:
            stub = search_pb2_grpc.SearchServiceStub(ch)
            for i in range(20):
                await stub.Query(req(i, True))

            async def seq(skip: bool, fixed: bool) -> dict[str, float]:
                return await time_calls(lambda i: stub.Query(req(0 if fixed else i, skip)), len(qs))

            out["hybrid_uncached_c1"] = await seq(True, False)
            await stub.Query(req(0, False))
            out["hybrid_cached_c1"] = await seq(False, True)

            async def load(skip: bool) -> dict[str, float]:
                lat: list[float] = []
                counter = iter(range(len(qs) * 2))

                async def worker() -> None:
                    for i in counter:
                        t = time.perf_counter()
                        await stub.Query(req(i if skip else 0, skip))
                        lat.append(time.perf_counter() - t)

                start = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                return summary(lat, time.perf_counter() - start)

            out[f"hybrid_uncached_c{concurrency}"] = await load(True)
            out[f"hybrid_cached_c{concurrency}"] = await load(False)

    asyncio.run(run())
    return out


def rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def bench_backend(kind: str, corpus: Corpus, args: argparse.Namespace, stack_info: Any) -> dict[str, Any]:
    from tests.service_process import ServiceProcess

    env: dict[str, str] = {"IMAGESEARCH_SEARCH_BACKEND": kind, "IMAGESEARCH_SEARCH_LOG_LEVEL": "warning"}
    if kind == "embedded":
        env["IMAGESEARCH_SEARCH_DATA_DIR"] = tempfile.mkdtemp(prefix="bench-search-")
    else:
        env.update(
            IMAGESEARCH_SEARCH_WEAVIATE_HOST=stack_info.host,
            IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT=str(stack_info.weaviate_http_port),
            IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT=str(stack_info.weaviate_grpc_port),
            IMAGESEARCH_SEARCH_WEAVIATE_API_KEY=weaviate_api_key(),
            IMAGESEARCH_SEARCH_WEAVIATE_COLLECTION=f"Bench{uuid.uuid4().hex[:8]}",
        )
    caches = ["memory"] + (["redis"] if stack_info is not None else [])
    result: dict[str, Any] = {"backend": kind, "vectors": corpus.kind}
    qs = queries(corpus, args.queries)

    async def in_process() -> None:
        for k, v in env.items():
            os.environ[k] = v
        settings = SearchSettings(cache="memory")
        backend = make_backend(settings)
        await backend.start()
        core = SearchCore(settings, backend, make_cache(settings))
        result["index"] = await index(core, corpus, args.batch, args.index_budget_s)
        if kind == "weaviate":
            result["index"]["settle_seconds"] = wait_until_quiet(stack_info.pids["weaviate"])
        indexed = result["index"]["indexed"]
        t = time.perf_counter()
        result["recall_at_10"] = round(await recall_at_10(core, corpus, indexed, args.recall_queries), 4)
        result["recall_seconds"] = round(time.perf_counter() - t, 1)
        if args.ef_sweep:
            # Recall@10 and latency of pure vector queries against the graph's query-time ef.
            sweep = {}
            for ef in [int(x) for x in args.ef_sweep.split(",")]:
                await set_query_ef(backend, kind, ef)
                lat: list[float] = []
                rec = await recall_at_10(core, corpus, indexed, args.recall_queries, lat)
                sweep[ef] = {"recall_at_10": round(rec, 4), **summary(lat, sum(lat))}
            await set_query_ef(backend, kind, settings.hnsw_ef_search)
            result["ef_sweep"] = sweep
        result["inside_memory_cache"] = await inside(core, qs)
        if stack_info is not None:
            rs = SearchSettings(
                cache="redis",
                redis_url=stack_info.redis_url,
                cache_key_prefix=f"bench-{uuid.uuid4().hex[:6]}:",
            )
            rcore = SearchCore(rs, backend, make_cache(rs))
            result["inside_redis_cache"] = await inside(rcore, qs)
            await rcore.cache.close()
        result["bench_process_max_rss_mb"] = rss_mb()
        await backend.close()

    asyncio.run(in_process())
    for cache in caches:
        extra = {"IMAGESEARCH_SEARCH_CACHE": cache}
        if cache == "redis":
            extra["IMAGESEARCH_SEARCH_REDIS_URL"] = stack_info.redis_url
            extra["IMAGESEARCH_SEARCH_CACHE_KEY_PREFIX"] = f"bench-{uuid.uuid4().hex[:6]}:"
        with ServiceProcess("services.search", env={**env, **extra}) as svc:
            result[f"grpc_{cache}_cache"] = through_grpc(svc.address, qs, args.concurrency)
            assert svc.proc is not None
            result[f"service_rss_mb_{cache}"] = rss_mb(svc.proc.pid)
    if kind == "weaviate":
        result["weaviate_rss_mb"] = rss_mb(stack_info.pids["weaviate"])
        asyncio.run(drop_collection())  # each run indexes its own collection: do not leave it behind
    return result


async def drop_collection() -> None:
    """Delete the collection the environment names (IMAGESEARCH_SEARCH_WEAVIATE_*)."""
    backend = make_backend(SearchSettings())
    await backend.start()
    try:
        await backend._client.collections.delete(backend._name)  # type: ignore[attr-defined]
    finally:
        await backend.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="assets to index")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=500, help="queries per latency measurement")
    ap.add_argument("--recall-queries", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--index-budget-s", type=float, default=900, help="stop indexing after this long")
    ap.add_argument("--backends", default="embedded,weaviate")
    ap.add_argument("--out", help="write the JSON report here too")
    ap.add_argument(
        "--ef-sweep",
        default="",
        help="also report recall@10 and latency at these query-time ef values, e.g. 128,512",
    )
    ap.add_argument(
        "--vectors",
        default="iid",
        help="vector distributions, comma-separated: iid (worst case), clustered (embedding-like), "
        "demo (real: the demo model's embeddings of its images, at most 12,471; bench/demo_vectors.py); "
        "each is indexed and reported separately",
    )
    args = ap.parse_args()

    corpora = []
    for kind in args.vectors.split(","):
        t0 = time.perf_counter()
        corpora.append(Corpus(args.n, args.dim, vectors=kind))
        print(f"corpus ({kind}): {args.n} x {args.dim} in {time.perf_counter() - t0:.1f}s", flush=True)
    stack_info = None
    stack = None
    started: tuple[str, ...] = ()
    try:
        if "weaviate" in args.backends or os.environ.get("BENCH_REDIS", "1") == "1":
            from devstack import Stack

            stack = Stack(REPO)
            stack_info = stack.up(only="redis,weaviate" if "weaviate" in args.backends else "redis")
            started = stack_info.started
        report = []
        for corpus in corpora:
            for kind in args.backends.split(","):
                t = time.perf_counter()
                r = bench_backend(kind, corpus, args, stack_info)
                r["total_seconds"] = round(time.perf_counter() - t, 1)
                r["load_average"] = [round(x, 2) for x in os.getloadavg()]
                print(json.dumps(r, indent=2), flush=True)
                report.append(r)
        for corpus in corpora:
            pair = [r for r in report if r["vectors"] == corpus.kind]
            if len(pair) != 2:
                continue
            a, b = pair
            ratio = {
                "uncached_p99_embedded_over_weaviate": round(
                    a["grpc_memory_cache"]["hybrid_uncached_c1"]["p99_ms"]
                    / b["grpc_memory_cache"]["hybrid_uncached_c1"]["p99_ms"],
                    2,
                ),
                "upserts_per_s_embedded_over_weaviate": round(
                    a["index"]["upserts_per_s"] / b["index"]["upserts_per_s"], 2
                ),
            }
            print(f"ratios ({corpus.kind}):", json.dumps(ratio), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))
    finally:
        if stack is not None and started:
            stack.down(only=started)


if __name__ == "__main__":
    main()
