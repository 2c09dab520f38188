"""Gateway benchmark: end-to-end search latency/QPS and ingest throughput against baselines measured
in the same run.

    python -m bench.gateway                 # embedded defaults (ONNX Runtime encoder, embedded search)
    python -m bench.gateway --stack         # the real stack (Triton, Weaviate, Redis via devstack)
    python -m bench.gateway --images 256 --queries 200 --concurrency 4 --json out.json

What it measures (loopback only; bounded by --images/--queries and --max-seconds per phase):
- ingest: images/s end to end through GatewayService.Ingest (validate, hash, dedupe, safety + OCR,
  encode, upsert, ack), with analysis on (inline, before the acknowledgement: the test suite's gateway
  setting; bench/ingest_ack.py measures deferred analysis) and off, against encoder-only images/s
  (EncodeImages in the gateway's own batch size and concurrency) measured in the same run on the same
  images;
- text search: p50/p95/p99 uncached (unique texts: encoder + first stage + rerank) and cached
  (repeated text: query-vector LRU + first-stage cache hit + rerank), and QPS at --concurrency;
  baselines: EncodeTexts alone and SearchService.Query alone;
- CPU milliseconds per call of the gateway, encoder and search processes during the uncached text
  searches and during each hop alone: the gateway's own work beside its hops';
- image search: p50/p99 uncached (distinct images) and repeated.

Images come from the demo model's data cache (tools/models/fetch_data.py); without it, generated ones.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from imagesearch.v1 import (
    common_pb2,
    encoder_pb2,
    encoder_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)

from bench.proctree import cpu_seconds, descendants
from tests.gateway.suite import DATA_CACHE, KEYRING, MANIFEST, Suite
from tests.service_process import ServiceProcess

REPO = Path(__file__).resolve().parents[1]

KEY = [("authorization", "Bearer globex-gus")]  # admin of tenant globex (any licence)


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1000
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def load_items(n: int) -> list[tuple[str, bytes, str]]:
    """(asset id, image bytes, caption) from the data cache, or generated images."""
    out: list[tuple[str, bytes, str]] = []
    if MANIFEST.exists() and DATA_CACHE.is_dir():
        for line in MANIFEST.read_text().splitlines():
            r = json.loads(line)
            p = DATA_CACHE / r["path"]
            if p.is_file() and p.stat().st_size < 2_000_000:
                out.append((r["id"].replace(":", "-"), p.read_bytes(), r["caption"]))
            if len(out) >= n:
                return out
    from PIL import Image

    rng = np.random.default_rng(0)
    while len(out) < n:
        i = len(out)
        arr = rng.integers(0, 255, size=(256, 256, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        out.append((f"gen-{i}", buf.getvalue(), f"generated image {i}"))
    return out


async def timed(fn: Callable[[], Awaitable[Any]], count: int, max_s: float) -> list[float]:
    samples: list[float] = []
    stop = time.monotonic() + max_s
    for _ in range(count):
        t = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t)
        if time.monotonic() > stop:
            break
    return samples


async def timed_cpu(
    fn: Callable[[], Awaitable[Any]], count: int, max_s: float, procs: dict[str, ServiceProcess]
) -> tuple[list[float], dict[str, float]]:
    """`timed`, plus each process's CPU milliseconds per call over the phase (with its children)."""
    pids = {name: p.proc.pid for name, p in procs.items() if p.proc is not None}
    before = {name: cpu_seconds(descendants(pid)) for name, pid in pids.items()}
    samples = await timed(fn, count, max_s)
    return samples, {
        name: round(1e3 * (cpu_seconds(descendants(pid)) - before[name]) / max(1, len(samples)), 3)
        for name, pid in pids.items()
    }


async def qps(
    fn: Callable[[int], Awaitable[Any]], total: int, concurrency: int, max_s: float
) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(total))
    stop = time.monotonic() + max_s

    async def worker() -> None:
        for i in counter:
            if time.monotonic() > stop:
                return
            t = time.perf_counter()
            await fn(i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return {"qps": len(latencies) / wall, "concurrency": concurrency, **percentiles(latencies)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack_info = None
    if args.stack:
        from devstack import Stack

        stack_info = Stack(REPO).up()
    results: dict[str, Any] = {"mode": "stack" if args.stack else "embedded"}
    suite = Suite("stack" if args.stack else "embedded", stack_info).start()
    # A second gateway with safety + OCR off, on the same encoder and search services.
    bare = ServiceProcess(
        "services.gateway",
        {
            "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": suite.encoder.address,  # type: ignore[union-attr]
            "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": suite.search.address,  # type: ignore[union-attr]
            "IMAGESEARCH_GATEWAY_API_KEYS_JSON": json.dumps(KEYRING),
            "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",
            "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
            "IMAGESEARCH_GATEWAY_LOG_LEVEL": "warning",
        },
    ).start(timeout_s=120)
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    try:
        async with (
            grpc.aio.insecure_channel(suite.gateway.address, options=opts) as gch,  # type: ignore[union-attr]
            grpc.aio.insecure_channel(bare.address, options=opts) as bch,
            grpc.aio.insecure_channel(suite.encoder.address, options=opts) as ech,  # type: ignore[union-attr]
            grpc.aio.insecure_channel(suite.search.address, options=opts) as sch,  # type: ignore[union-attr]
        ):
            gw = gateway_pb2_grpc.GatewayServiceStub(gch)
            gw_bare = gateway_pb2_grpc.GatewayServiceStub(bch)
            enc = encoder_pb2_grpc.EncoderServiceStub(ech)
            srch = search_pb2_grpc.SearchServiceStub(sch)
            items = load_items(args.images)
            results["images"] = len(items)

            # ---- ingest vs encoder-only ---------------------------------------------------------
            batch, in_flight = 16, 2  # the gateway's defaults: batches of 16, 32 items in flight
            warm = [encoder_pb2.ImageInput(id=str(i), data=d) for i, (_, d, _) in enumerate(items[:16])]
            await enc.EncodeImages(encoder_pb2.EncodeImagesRequest(images=warm))

            async def encoder_only() -> float:
                chunks = [items[i : i + batch] for i in range(0, len(items), batch)]
                queue = iter(chunks)

                async def worker() -> None:
                    for chunk in queue:
                        req = encoder_pb2.EncodeImagesRequest(
                            images=[encoder_pb2.ImageInput(id=a, data=d) for a, d, _ in chunk]
                        )
                        await enc.EncodeImages(req, timeout=120)

                t = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(in_flight)))
                return len(items) / (time.perf_counter() - t)

            async def ingest(stub: Any, prefix: str) -> tuple[float, dict[str, int]]:
                async def reqs():  # type: ignore[no-untyped-def]
                    for a, d, c in items:
                        yield gateway_pb2.IngestRequest(
                            asset_id=f"{prefix}{a}",
                            image=d,
                            caption=c,
                            license=common_pb2.License(name="MIT"),
                        )

                counts: dict[str, int] = {}
                t = time.perf_counter()
                async for ack in stub.Ingest(reqs(), metadata=KEY, timeout=600):
                    name = gateway_pb2.IngestOutcome.Name(ack.outcome)
                    counts[name] = counts.get(name, 0) + 1
                return len(items) / (time.perf_counter() - t), counts

            enc_before = await encoder_only()
            bare_ips, bare_counts = await ingest(gw_bare, "bare-")
            # The same bytes under new ids would be DUPLICATEs (no encode, no write): delete the first
            # run's assets so the second run does the full work too.
            await srch.DeleteAssets(
                search_pb2.DeleteAssetsRequest(tenant="globex", asset_ids=[f"bare-{a}" for a, _, _ in items])
            )
            full_ips, full_counts = await ingest(gw, "full-")
            enc_after = await encoder_only()
            enc_ips = statistics.mean([enc_before, enc_after])
            results["ingest"] = {
                "encoder_only_img_s": enc_ips,
                "encoder_only_runs": [enc_before, enc_after],
                "ingest_no_analysis_img_s": bare_ips,
                "ingest_no_analysis_ratio": bare_ips / enc_ips,
                "ingest_with_safety_ocr_img_s": full_ips,
                "ingest_with_safety_ocr_ratio": full_ips / enc_ips,
                "outcomes_no_analysis": bare_counts,
                "outcomes_with_analysis": full_counts,
            }

            # ---- text search ----------------------------------------------------------------------
            captions = list(dict.fromkeys(c for _, _, c in load_items(args.images + args.queries * 3)))
            texts = [f"{c} {i}" for i, c in enumerate(captions)]  # unique: no vector or result cache hits

            async def gsearch(**kw: Any) -> Any:
                return await gw.Search(
                    gateway_pb2.SearchRequest(page_size=10, **kw), metadata=KEY, timeout=10
                )

            for t in texts[:5]:
                await gsearch(text=t)  # warm-up
            # CPU per call of each service: what the gateway itself spends beside its hops' own work.
            assert suite.gateway is not None and suite.encoder is not None and suite.search is not None
            procs = {"gateway": suite.gateway, "encoder": suite.encoder, "search": suite.search}
            q = iter(texts[5:])
            uncached, uncached_cpu = await timed_cpu(
                lambda: gsearch(text=next(q)),
                args.queries,
                args.max_seconds,
                procs,
            )
            await gsearch(text="a red car")
            cached = await timed(lambda: gsearch(text="a red car"), args.queries, args.max_seconds)
            assert (await gsearch(text="a red car")).cached, "repeated query was not served from the cache"
            q2 = iter(texts[5 + len(uncached) :])
            conc = await qps(
                lambda i: gsearch(text=next(q2)), args.queries, args.concurrency, args.max_seconds
            )
            conc_cached = await qps(
                lambda i: gsearch(text="a red car"), args.queries, args.concurrency, args.max_seconds
            )

            # baselines: the two hops alone
            q3 = iter(texts[::-1])
            enc_text, enc_text_cpu = await timed_cpu(
                lambda: enc.EncodeTexts(
                    encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text=next(q3))])
                ),
                args.queries,
                args.max_seconds,
                procs,
            )
            vec_resp = await enc.EncodeTexts(
                encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text="x")])
            )
            vec = vec_resp.results[0].embedding
            q4 = iter(texts[::-1])
            first_stage, first_stage_cpu = await timed_cpu(
                lambda: srch.Query(
                    search_pb2.QueryRequest(
                        tenant="globex",
                        text=next(q4),
                        vector=vec,
                        limit=100,
                        include_vectors=True,
                        skip_cache=True,
                    )
                ),
                args.queries,
                args.max_seconds,
                procs,
            )
            results["text_search"] = {
                "uncached": percentiles(uncached),
                "cached": percentiles(cached),
                "uncached_concurrent": conc,
                "cached_concurrent": conc_cached,
                "baseline_encode_text": percentiles(enc_text),
                "baseline_first_stage_window100_uncached": percentiles(first_stage),
            }
            results["text_search_cpu_ms_per_call"] = {
                "uncached": uncached_cpu,
                "baseline_encode_text": enc_text_cpu,
                "baseline_first_stage_window100_uncached": first_stage_cpu,
            }

            # ---- image search ---------------------------------------------------------------------
            imgs = iter([d for _, d, _ in items[::-1]])
            img_uncached = await timed(
                lambda: gsearch(image=next(imgs)), min(args.queries, len(items)), args.max_seconds
            )
            one = items[0][1]
            await gsearch(image=one)
            img_repeat = await timed(lambda: gsearch(image=one), args.queries, args.max_seconds)
            results["image_search"] = {
                "uncached": percentiles(img_uncached),
                "repeated": percentiles(img_repeat),
            }
    finally:
        bare.stop()
        suite.stop()
    return results


def report(r: dict[str, Any]) -> None:
    print(f"\n== gateway benchmark ({r['mode']}, {r['images']} images, {os.cpu_count()} cores) ==")
    ing = r["ingest"]
    print(
        f"ingest: encoder-only {ing['encoder_only_img_s']:.1f} img/s "
        f"(runs {ing['encoder_only_runs'][0]:.1f}, {ing['encoder_only_runs'][1]:.1f})\n"
        f"        end to end, safety+OCR off {ing['ingest_no_analysis_img_s']:.1f} img/s "
        f"= {ing['ingest_no_analysis_ratio']:.0%} of encoder-only\n"
        f"        end to end, safety+OCR inline {ing['ingest_with_safety_ocr_img_s']:.1f} img/s "
        f"= {ing['ingest_with_safety_ocr_ratio']:.0%} of encoder-only"
    )
    print(f"{'':8}outcomes: {ing['outcomes_no_analysis']} / {ing['outcomes_with_analysis']}")

    def row(name: str, p: dict[str, float]) -> None:
        extra = f"  {p['qps']:.0f} QPS @ {p['concurrency']}" if "qps" in p else ""
        print(
            f"  {name:<40} p50 {p['p50_ms']:7.2f}  p95 {p['p95_ms']:7.2f}  p99 {p['p99_ms']:7.2f} ms{extra}"
        )

    print("text search (page 10, rerank window 100):")
    for k, p in r["text_search"].items():
        row(k, p)
    print("CPU ms per call (each process with its children; --stack: Triton and Weaviate not counted):")
    for k, cpu in r["text_search_cpu_ms_per_call"].items():
        print(f"  {k:<40} " + "  ".join(f"{name} {ms:6.2f}" for name, ms in cpu.items()))
    print("image search:")
    for k, p in r["image_search"].items():
        row(k, p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", action="store_true", help="real stack: Triton, Weaviate, Redis")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-seconds", type=float, default=60.0, help="cap per measured phase")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    results = asyncio.run(run(args))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
