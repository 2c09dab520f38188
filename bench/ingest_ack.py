"""Ingest acknowledged at encoder speed (issue 19 part 4): acknowledged images/s with safety + OCR on,
deferred and inline, against encoder-only images/s and ingest with the detectors off, all in one run on
the same images; and time-to-visible (acknowledgement -> analysed, searchable) p50/p95 in deferred mode.

    python -m bench.ingest_ack            # embedded defaults (ONNX Runtime encoder, embedded search)
    python -m bench.ingest_ack --stack    # the real stack (Triton, Weaviate, Redis via devstack)
    python -m bench.ingest_ack --images 96 --json out.json
    python -m bench.ingest_ack --package photo   # the suite's default model (a heavier encoder)
    python -m bench.ingest_ack --encoder-cores 0  # the encoder on core 0, everything else on the others

One encoder and one search service; four gateways on them: deferred analysis with analysis_nice 0 (the
default), deferred with analysis_nice 10, inline analysis, and safety + OCR off.
Phases, in order, on the same images (the previous run's assets deleted between runs, so every run
stores, encodes and writes everything):
  1. encoder-only: EncodeImages alone at the gateway's batch size (16) and concurrency (2);
  2. ingest, safety + OCR off;
  3. ingest, deferred: ack rate = images / (last ack - first request); while it runs and until the
     worker has drained, ListPendingAnalysis on the search service every --poll-ms says which items are
     still pending: time-to-visible of an item = first poll not listing it - its acknowledgement;
     analysed images/s = images / (last visible - first request);
  4. the same with analysis_nice 10 (the detectors below the acknowledgements' priority);
  5. ingest, inline (analysed before each acknowledgement);
  6. encoder-only again (the baseline is the mean of 1 and 6).
With --encoder-cores, every thread of the encoder (and its children) runs on those cores and every
other process of the run (gateways, search service, this client) on the remaining ones, in every phase,
the baseline included: the encoder's throughput with cores of its own, as a deployment gives each
service its own CPU, against what the ingest path acknowledges when the rest of it does not take the
encoder's CPU. Without it, all of them share every core of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
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

from bench.gateway import load_items
from bench.proctree import pin
from tests.gateway.suite import KEYRING, Suite
from tests.service_process import ServiceProcess

REPO = Path(__file__).resolve().parents[1]
KEY = [("authorization", "Bearer globex-gus")]  # admin of tenant globex (any licence)
TENANT = "globex"
_OPTS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]


def _gateway(suite: Suite, **env: str) -> ServiceProcess:
    return ServiceProcess(
        "services.gateway",
        {
            "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": suite.encoder.address,  # type: ignore[union-attr]
            "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": suite.search.address,  # type: ignore[union-attr]
            "IMAGESEARCH_GATEWAY_API_KEYS_JSON": json.dumps(KEYRING),
            "IMAGESEARCH_GATEWAY_LOG_LEVEL": "warning",
            **{f"IMAGESEARCH_GATEWAY_{k.upper()}": v for k, v in env.items()},
        },
    ).start(timeout_s=180)


def pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {
        "n": len(a),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "max_ms": float(a.max()),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack_info = None
    if args.stack:
        from devstack import Stack

        stack_info = Stack(REPO).up()
    suite = Suite(
        "stack" if args.stack else "embedded",
        stack_info,
        gateway_env={
            "IMAGESEARCH_GATEWAY_ANALYSIS_MODE": "deferred",
            "IMAGESEARCH_GATEWAY_LOG_LEVEL": "warning",
        },
        package=args.package,
    ).start()
    inline = _gateway(suite, analysis_mode="inline")
    niced = _gateway(suite, analysis_mode="deferred", analysis_nice="10")
    bare = _gateway(suite, safety_enabled="false", ocr_enabled="false")
    results: dict[str, Any] = {
        "mode": "stack" if args.stack else "embedded",
        "package": args.package,
        "cores": os.cpu_count(),
    }
    if args.encoder_cores is not None:
        rest = set(range(os.cpu_count() or 1)) - args.encoder_cores
        if not rest or not args.encoder_cores <= set(range(os.cpu_count() or 1)):
            raise SystemExit(f"--encoder-cores {sorted(args.encoder_cores)} leaves no core for the rest")
        pin(os.getpid(), rest)  # this client and every service it started (its children), then:
        pin(suite.encoder.proc.pid, args.encoder_cores)  # type: ignore[union-attr]
        results["encoder_cores"] = sorted(args.encoder_cores)
        results["other_cores"] = sorted(rest)
    try:
        async with (
            grpc.aio.insecure_channel(suite.gateway.address, options=_OPTS) as dch,  # type: ignore[union-attr]
            grpc.aio.insecure_channel(inline.address, options=_OPTS) as ich,
            grpc.aio.insecure_channel(niced.address, options=_OPTS) as zch,
            grpc.aio.insecure_channel(bare.address, options=_OPTS) as bch,
            grpc.aio.insecure_channel(suite.encoder.address, options=_OPTS) as ech,  # type: ignore[union-attr]
            grpc.aio.insecure_channel(suite.search.address, options=_OPTS) as sch,  # type: ignore[union-attr]
        ):
            enc = encoder_pb2_grpc.EncoderServiceStub(ech)
            srch = search_pb2_grpc.SearchServiceStub(sch)
            items = load_items(args.images)
            results["images"] = len(items)
            batch, in_flight = 16, 2  # the gateway's defaults
            warm = [encoder_pb2.ImageInput(id=str(i), data=d) for i, (_, d, _) in enumerate(items[:16])]
            await enc.EncodeImages(encoder_pb2.EncodeImagesRequest(images=warm))

            async def encoder_only() -> float:
                queue = iter([items[i : i + batch] for i in range(0, len(items), batch)])

                async def worker() -> None:
                    for chunk in queue:
                        req = encoder_pb2.EncodeImagesRequest(
                            images=[encoder_pb2.ImageInput(id=a, data=d) for a, d, _ in chunk]
                        )
                        await enc.EncodeImages(req, timeout=300)

                t = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(in_flight)))
                return len(items) / (time.perf_counter() - t)

            async def ingest(
                ch: grpc.aio.Channel, prefix: str, acked: dict[str, float] | None = None
            ) -> tuple[float, float, dict[str, int]]:
                """(start, images/s, outcome counts); `acked` gets each id's acknowledgement time."""
                stub = gateway_pb2_grpc.GatewayServiceStub(ch)
                acked = {} if acked is None else acked

                async def reqs():  # type: ignore[no-untyped-def]
                    for a, d, c in items:
                        yield gateway_pb2.IngestRequest(
                            asset_id=f"{prefix}{a}",
                            image=d,
                            caption=c,
                            license=common_pb2.License(name="MIT"),
                        )

                counts: dict[str, int] = {}
                start = time.perf_counter()
                async for ack in stub.Ingest(reqs(), metadata=KEY, timeout=1800):
                    acked[ack.asset_id] = time.perf_counter()
                    name = gateway_pb2.IngestOutcome.Name(ack.outcome).removeprefix("INGEST_OUTCOME_")
                    if ack.analysis_state == common_pb2.ANALYSIS_STATE_PENDING:
                        name += "+PENDING"
                    counts[name] = counts.get(name, 0) + 1
                return start, len(items) / (max(acked.values()) - start), counts

            async def delete(prefix: str) -> None:
                ids = [f"{prefix}{a}" for a, _, _ in items]
                for i in range(0, len(ids), 100):
                    await srch.DeleteAssets(
                        search_pb2.DeleteAssetsRequest(tenant=TENANT, asset_ids=ids[i : i + 100])
                    )

            async def pending_ids() -> set[str]:
                resp = await srch.ListPendingAnalysis(
                    search_pb2.ListPendingAnalysisRequest(tenant=TENANT, limit=1000), timeout=30
                )
                return {p.asset_id for p in resp.assets}

            enc_before = await encoder_only()
            _, bare_ips, bare_counts = await ingest(bch, "bare-")
            await delete("bare-")

            async def deferred(ch: grpc.aio.Channel, prefix: str) -> dict[str, Any]:
                """Ingest, polling the queue from the first request until every item is analysed. An
                item acknowledged before a listing was asked for and absent from it is analysed."""
                visible_at: dict[str, float] = {}
                acked: dict[str, float] = {}
                wanted = {f"{prefix}{a}" for a, _, _ in items}

                async def poll() -> None:
                    while len(visible_at) < len(wanted):
                        asked = time.perf_counter()
                        now_pending = await pending_ids()
                        now = time.perf_counter()
                        for a, at in list(acked.items()):
                            if at < asked and a not in now_pending:
                                visible_at.setdefault(a, now)
                        await asyncio.sleep(args.poll_ms / 1000)

                poller = asyncio.create_task(poll())
                start, ips, counts = await ingest(ch, prefix, acked)
                await asyncio.wait_for(poller, args.max_drain_s)
                await delete(prefix)
                return {
                    "ack_img_s": ips,
                    "ack_ratio": 0.0,  # filled in below
                    "analysed_img_s": len(items) / (max(visible_at.values()) - start),
                    "time_to_visible": pct([visible_at[a] - acked[a] for a in wanted]),
                    "outcomes": counts,
                }

            same = await deferred(dch, "def-")
            low = await deferred(zch, "dn-")

            _, inl_ips, inl_counts = await ingest(ich, "inl-")
            await delete("inl-")
            enc_after = await encoder_only()
            enc = statistics.mean([enc_before, enc_after])
            for d in (same, low):
                d["ack_ratio"] = d["ack_img_s"] / enc
            results["ingest_ack"] = {
                "encoder_only_img_s": enc,
                "encoder_only_runs": [enc_before, enc_after],
                "safety_ocr_off_img_s": bare_ips,
                "safety_ocr_off_ratio": bare_ips / enc,
                "deferred": same,
                "deferred_nice10": low,
                "inline_ack_img_s": inl_ips,
                "inline_ack_ratio": inl_ips / enc,
                "poll_ms": args.poll_ms,
                "outcomes": {"off": bare_counts, "inline": inl_counts},
            }
    finally:
        bare.stop()
        inline.stop()
        niced.stop()
        suite.stop()
    return results


def report(r: dict[str, Any]) -> None:
    a = r["ingest_ack"]
    print(
        f"\n== ingest acknowledgement ({r['mode']}, model package {r['package']}, {r['images']} images, "
        f"{r['cores']} cores"
        + (
            f"; encoder on cores {r['encoder_cores']}, the rest on {r['other_cores']}"
            if "encoder_cores" in r
            else ", shared by every process"
        )
        + ") =="
    )
    rows = [
        ("encoder-only (EncodeImages alone)", a["encoder_only_img_s"], 1.0, ""),
        ("ingest, safety + OCR off", a["safety_ocr_off_img_s"], a["safety_ocr_off_ratio"], ""),
    ]
    for key, name in (("deferred", "deferred (nice 0)"), ("deferred_nice10", "deferred, nice 10")):
        d = a[key]
        t = d["time_to_visible"]
        rows.append(
            (
                f"ingest, safety + OCR {name} (ack)",
                d["ack_img_s"],
                d["ack_ratio"],
                f"  analysed {d['analysed_img_s']:.1f} img/s; time to visible p50 {t['p50_ms']:.0f} ms, "
                f"p95 {t['p95_ms']:.0f} ms, max {t['max_ms']:.0f} ms",
            )
        )
    rows.append(("ingest, safety + OCR inline (ack)", a["inline_ack_img_s"], a["inline_ack_ratio"], ""))
    for name, ips, ratio, extra in rows:
        print(f"{name:<44} {ips:7.1f} img/s = {ratio:.2f}x{extra}")
    print(
        f"encoder-only runs: {a['encoder_only_runs'][0]:.1f}, {a['encoder_only_runs'][1]:.1f} img/s; "
        f"time to visible = acknowledgement -> first ListPendingAnalysis without it (poll {a['poll_ms']} ms)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", action="store_true", help="real stack: Triton, Weaviate, Redis")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument(
        "--package",
        default="demo",
        help="the encoder's model package: demo (clip-art, this bench's default) or photo (the suite's)",
    )
    ap.add_argument(
        "--encoder-cores",
        type=lambda text: {int(c) for c in text.split(",")},
        help="pin the encoder to these cores (e.g. 0 or 0,1) and every other process to the rest "
        "(embedded mode: there the encoder runs its model in process)",
    )
    ap.add_argument("--poll-ms", type=float, default=100.0, help="ListPendingAnalysis interval")
    ap.add_argument("--max-drain-s", type=float, default=1800.0, help="give up waiting for the worker")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.stack and args.encoder_cores is not None:
        ap.error("--encoder-cores pins the in-process encoder; on the stack the model runs in Triton")
    results = asyncio.run(run(args))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
