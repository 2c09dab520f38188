"""Measure what each second-stage step does, on labelled open data, with the real encoder and search.

    python -m bench.gateway_rerank [--stack] [--items 900] [--queries 150] [--dups 60]

Ingests held-out items of the demo model's manifest (each has a caption group: the same concept drawn
in several styles and sources) plus `--dups` near-duplicate copies (resized JPEG re-encodes) through
the gateway, then for each query takes the first stage exactly as the gateway does (SearchService.Query,
window 100, stored vectors) and applies rerank variants in-process (services.gateway.rerank), so every
variant sees the same candidates:

- text queries (a group's caption; relevant = the group's items): first stage vs exact re-score vs
  + duplicate collapse vs + MMR at several lambdas;
- text + image queries (caption + one example of the group, the example excluded): z-score fusion vs a
  raw weighted sum of cosines vs text only vs image only.

Then the window's transfer (issue 19 part 3): Query with 100 vectors + the gateway's conversion
(convert.query_result), one float32 embedding per hit against packed float32 / float16 matrices, the
same queries interleaved; and whether float16 vectors change the reranked page.

Metrics at 10: nDCG, recall, distinct relevant items, near-duplicate pairs (same bytes or cosine > 0.97
between results), intra-list diversity (mean 1 - cosine between results), and each step's time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the gateway process does (before numpy loads)

import argparse
import asyncio
import io
import json
import math
import random
import sys
import time
from collections import defaultdict
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
from PIL import Image

from services.gateway import convert
from services.gateway.domain import FirstStageScores, Hit
from services.gateway.rerank import RerankConfig, rerank
from tests.gateway.suite import DATA_CACHE, MANIFEST, Suite

REPO = Path(__file__).resolve().parents[1]

KEY = [("authorization", "Bearer globex-gus")]
K = 10
DUP_COS = 0.97


def resized_jpeg(data: bytes) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((max(8, int(img.width * 0.9)), max(8, int(img.height * 0.9))))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def dcg(rels: list[int]) -> float:
    return sum(r / math.log2(i + 2) for i, r in enumerate(rels))


def metrics(
    ranked_ids: list[str], vectors: dict[str, np.ndarray], relevant: set[str], dup_of: dict[str, str]
) -> dict[str, float]:
    top = ranked_ids[:K]
    canon = [dup_of.get(a, a) for a in top]
    rels = [1 if c in relevant else 0 for c in canon]
    ideal = dcg([1] * min(K, len(relevant)))
    distinct = len({c for c in canon if c in relevant})
    pairs = copies = 0
    vs = [vectors[a] for a in top]
    sims = []
    for i in range(len(top)):
        for j in range(i + 1, len(top)):
            cos = float(vs[i] @ vs[j])
            sims.append(cos)
            if canon[i] == canon[j]:
                copies += 1
            if canon[i] == canon[j] or cos > DUP_COS:
                pairs += 1
    return {
        "ndcg": dcg(rels) / ideal if ideal else 0.0,
        "recall": distinct / max(1, min(K, len(relevant))),
        "distinct_relevant": float(distinct),
        "dup_pairs": float(pairs),
        "copy_pairs": float(copies),
        "diversity": float(1 - np.mean(sims)) if sims else 0.0,
    }


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stack_info = None
    if args.stack:
        from devstack import Stack

        stack_info = Stack(REPO).up()
    suite = Suite(
        "stack" if args.stack else "embedded",
        stack_info,
        gateway_env={
            "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",
            "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
        },
    ).start()
    rng = random.Random(0)
    rows = [json.loads(line) for line in MANIFEST.read_text().splitlines()]
    held = [r for r in rows if r["split"] == "heldout" and (DATA_CACHE / r["path"]).is_file()]
    rng.shuffle(held)
    held = held[: args.items]
    groups: dict[str, list[str]] = defaultdict(list)
    for r in held:
        groups[r["group"]].append(r["id"].replace(":", "-"))
    data = {r["id"].replace(":", "-"): (DATA_CACHE / r["path"]).read_bytes() for r in held}
    captions = {r["id"].replace(":", "-"): r["caption"] for r in held}
    dup_of: dict[str, str] = {}
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    out: dict[str, Any] = {"mode": "stack" if args.stack else "embedded", "items": len(held)}
    try:
        async with (
            grpc.aio.insecure_channel(suite.gateway.address, options=opts) as gch,  # type: ignore[union-attr]
            grpc.aio.insecure_channel(suite.encoder.address, options=opts) as ech,  # type: ignore[union-attr]
            grpc.aio.insecure_channel(suite.search.address, options=opts) as sch,  # type: ignore[union-attr]
        ):
            gw = gateway_pb2_grpc.GatewayServiceStub(gch)
            enc = encoder_pb2_grpc.EncoderServiceStub(ech)
            srch = search_pb2_grpc.SearchServiceStub(sch)

            async def reqs():  # type: ignore[no-untyped-def]
                for aid, raw in data.items():
                    yield gateway_pb2.IngestRequest(
                        asset_id=aid, image=raw, caption=captions[aid], license=common_pb2.License(name="MIT")
                    )
                for aid in rng.sample(sorted(data), min(args.dups, len(data))):
                    dup_of[f"{aid}~copy"] = aid
                    yield gateway_pb2.IngestRequest(
                        asset_id=f"{aid}~copy",
                        image=resized_jpeg(data[aid]),
                        caption=captions[aid],
                        license=common_pb2.License(name="MIT"),
                    )

            async for ack in gw.Ingest(reqs(), metadata=KEY, timeout=1200):
                if ack.outcome == gateway_pb2.INGEST_OUTCOME_FAILED:
                    print("ingest failed:", ack.asset_id, ack.error.message, file=sys.stderr)

            async def embed_text(text: str) -> tuple[np.ndarray, Any]:
                r = await enc.EncodeTexts(
                    encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text=text)])
                )
                return convert.vector(r.results[0].embedding), r.model  # type: ignore[return-value]

            async def embed_image(raw: bytes) -> np.ndarray:
                r = await enc.EncodeImages(
                    encoder_pb2.EncodeImagesRequest(images=[encoder_pb2.ImageInput(data=raw)])
                )
                return convert.vector(r.results[0].embedding)  # type: ignore[return-value]

            async def window(text: str, vec: np.ndarray, model: Any, alpha: float) -> list[Hit]:
                resp = await srch.Query(
                    search_pb2.QueryRequest(
                        tenant="globex",
                        text=text,
                        vector=common_pb2.Embedding(values=vec.astype("<f4").tobytes(), model=model),
                        alpha=alpha,
                        limit=100,
                        include_vectors=True,
                        skip_cache=True,
                    )
                )
                return [
                    Hit(
                        convert.asset(h.asset),
                        FirstStageScores(
                            fused=h.scores.fused,
                            keyword=h.scores.keyword_contribution,
                            vector=h.scores.vector_contribution,
                            bm25=h.scores.bm25,
                            cosine=h.scores.cosine_similarity,
                        ),
                        convert.vector(h.image_embedding),
                    )
                    for h in resp.hits
                ]

            multi = sorted(g for g, members in groups.items() if len(members) >= 2)
            query_groups = rng.sample(multi, min(args.queries, len(multi)))

            def cfg(dup: float, mmr: float) -> RerankConfig:
                return RerankConfig(mmr_lambda=mmr, duplicate_threshold=dup, alpha=0.75)

            text_variants: dict[str, RerankConfig | None] = {
                "first stage (fused)": None,
                "exact re-score": cfg(1.0, 1.0),
                "+ duplicate collapse 0.97": cfg(0.97, 1.0),
                "+ duplicate collapse 0.99": cfg(0.99, 1.0),
                "+ duplicate collapse 0.995": cfg(0.995, 1.0),
                "dup 0.99 + MMR 0.85": cfg(0.99, 0.85),
                "dup 0.99 + MMR 0.7": cfg(0.99, 0.7),
                "dup 0.99 + MMR 0.5": cfg(0.99, 0.5),
                "dup 0.99 + MMR 0.3": cfg(0.99, 0.3),
            }
            text_rows: dict[str, list[dict[str, float]]] = defaultdict(list)
            timings: dict[str, list[float]] = defaultdict(list)
            for g in query_groups:
                relevant = set(groups[g])
                caption = captions[groups[g][0]]
                qv, model = await embed_text(caption)
                hits = await window(caption, qv, model, 0.75)
                vectors = {h.asset.asset_id: h.vector for h in hits}
                for name, variant in text_variants.items():
                    if variant is None:
                        order = [h.asset.asset_id for h in hits]
                    else:
                        # top_k as for a first page of K results (greedy MMR is prefix-stable)
                        ranked, trace = rerank(hits, variant, text_vector=qv, top_k=K + 1)
                        order = [r.hit.asset.asset_id for r in ranked]
                        if name == "dup 0.99 + MMR 0.7":
                            for step, ms in trace.timings_ms.items():
                                timings[step].append(ms)
                    text_rows[name].append(metrics(order, vectors, relevant, dup_of))  # type: ignore[arg-type]
            out["text_queries"] = len(query_groups)
            out["text"] = {k: mean(v) for k, v in text_rows.items()}
            out["step_ms_window100"] = {k: float(np.mean(v)) for k, v in timings.items()}

            # The window's transfer (issue 19 part 3): the same queries' first stage as the gateway
            # fetches and converts it (Query + convert.query_result), with one float32 embedding per
            # hit (before) and packed float32 / float16 matrices, interleaved per query; and whether
            # float16 changes the reranked page.
            encodings = {
                "per hit (float32)": search_pb2.VECTOR_ENCODING_UNSPECIFIED,
                "packed float32": search_pb2.VECTOR_ENCODING_FLOAT32,
                "packed float16": search_pb2.VECTOR_ENCODING_FLOAT16,
            }
            xfer_ms: dict[str, list[float]] = defaultdict(list)
            conv_ms: dict[str, list[float]] = defaultdict(list)
            xfer_bytes: dict[str, list[int]] = defaultdict(list)
            same_page: list[float] = []
            ndcg_f16: list[float] = []
            ndcg_f32: list[float] = []
            for _ in range(args.transfer_rounds):
                for g in query_groups:
                    caption = captions[groups[g][0]]
                    qv, model = await embed_text(caption)
                    pages: dict[str, list[str]] = {}
                    for name, enc_value in encodings.items():
                        req = search_pb2.QueryRequest(
                            tenant="globex",
                            text=caption,
                            vector=common_pb2.Embedding(values=qv.astype("<f4").tobytes(), model=model),
                            alpha=0.75,
                            limit=100,
                            include_vectors=True,
                            packed_vector_encoding=enc_value,  # type: ignore[arg-type]
                        )
                        t0 = time.perf_counter()
                        resp = await srch.Query(req)
                        t1 = time.perf_counter()
                        result = convert.query_result(resp)
                        t2 = time.perf_counter()
                        xfer_ms[name].append((t2 - t0) * 1000)
                        conv_ms[name].append((t2 - t1) * 1000)
                        xfer_bytes[name].append(resp.ByteSize())
                        ranked, _ = rerank(result.hits, cfg(0.99, 0.7), text_vector=qv, top_k=K)
                        pages[name] = [r.hit.asset.asset_id for r in ranked]
                        if name != "per hit (float32)":
                            vectors = {h.asset.asset_id: h.vector for h in result.hits}
                            target = ndcg_f16 if name == "packed float16" else ndcg_f32
                            target.append(metrics(pages[name], vectors, set(groups[g]), dup_of)["ndcg"])  # type: ignore[arg-type]
                    same_page.append(float(pages["packed float16"] == pages["per hit (float32)"]))
            out["window_transfer"] = {
                name: {
                    "query_and_convert_ms_p50": float(np.percentile(xfer_ms[name], 50)),
                    "query_and_convert_ms_mean": float(np.mean(xfer_ms[name])),
                    "convert_ms_mean": float(np.mean(conv_ms[name])),
                    "response_bytes_mean": float(np.mean(xfer_bytes[name])),
                    "n": len(xfer_ms[name]),
                }
                for name in encodings
            }
            out["float16_same_page_share"] = float(np.mean(same_page)) if same_page else 0.0
            out["float16_ndcg"] = float(np.mean(ndcg_f16)) if ndcg_f16 else 0.0
            out["float32_ndcg"] = float(np.mean(ndcg_f32)) if ndcg_f32 else 0.0

            # text + image: the example image is excluded from the results (and its copy).
            fusion_rows: dict[str, list[dict[str, float]]] = defaultdict(list)
            for g in query_groups:
                members = groups[g]
                example = members[0]
                relevant = set(members[1:])
                if not relevant:
                    continue
                caption = captions[example]
                qt, model = await embed_text(caption)
                qi = await embed_image(data[example])
                w = 0.5
                combined = qt * w + qi * (1 - w)
                combined = combined / np.linalg.norm(combined)
                hits = [
                    h
                    for h in await window(caption, combined, model, 0.75)
                    if dup_of.get(h.asset.asset_id, h.asset.asset_id) != example
                ]
                vectors = {h.asset.asset_id: h.vector for h in hits}
                base = RerankConfig(mmr_lambda=1.0, duplicate_threshold=1.0, alpha=0.75, text_weight=w)
                variants = {
                    "z-score fusion (gateway)": [
                        r.hit.asset.asset_id for r in rerank(hits, base, text_vector=qt, image_vector=qi)[0]
                    ],
                    "raw weighted cosine sum": [
                        h.asset.asset_id
                        for h in sorted(
                            hits, key=lambda h: -(w * float(h.vector @ qt) + (1 - w) * float(h.vector @ qi))
                        )  # type: ignore[operator]
                    ],
                    "text only": [r.hit.asset.asset_id for r in rerank(hits, base, text_vector=qt)[0]],
                    "image only": [
                        r.hit.asset.asset_id
                        for r in rerank(
                            hits,
                            RerankConfig(mmr_lambda=1.0, duplicate_threshold=1.0, alpha=1.0),
                            image_vector=qi,
                        )[0]
                    ],
                    "first stage (fused)": [h.asset.asset_id for h in hits],
                }
                for name, order in variants.items():
                    fusion_rows[name].append(metrics(order, vectors, relevant, dup_of))  # type: ignore[arg-type]
            out["text_image_queries"] = len(fusion_rows.get("text only", []))
            out["text_image"] = {k: mean(v) for k, v in fusion_rows.items()}
    finally:
        suite.stop()
    return out


def report(r: dict[str, Any]) -> None:
    print(f"\n== rerank effects ({r['mode']}, {r['items']} items, window 100, metrics @{K}) ==")
    head = (
        f"{'variant':<28} {'nDCG':>6} {'recall':>7} {'distinct':>9} {'dup pairs':>10} {'copy pairs':>11} "
        f"{'diversity':>10}"
    )
    for section, n in (("text", r["text_queries"]), ("text_image", r["text_image_queries"])):
        print(f"\n{section.replace('_', ' + ')} queries: {n}")
        print(head)
        for name, m in r[section].items():
            print(
                f"{name:<28} {m['ndcg']:6.3f} {m['recall']:7.3f} {m['distinct_relevant']:9.2f} "
                f"{m['dup_pairs']:10.2f} {m['copy_pairs']:11.2f} {m['diversity']:10.3f}"
            )
    print(
        "\nstep cost (ms, window 100): "
        + ", ".join(f"{k} {v:.3f}" for k, v in r["step_ms_window100"].items())
    )
    wt = r.get("window_transfer")
    if wt:
        base = wt["per hit (float32)"]
        print("\nwindow transfer (Query with 100 vectors + convert.query_result, same queries, interleaved):")
        for name, m in wt.items():
            total, conv = m["query_and_convert_ms_mean"], m["convert_ms_mean"]
            size = m["response_bytes_mean"]
            print(
                f"  {name:<18} p50 {m['query_and_convert_ms_p50']:6.2f} ms  mean {total:6.2f} ms "
                f"({total / base['query_and_convert_ms_mean']:.2f}x)  convert {conv:.3f} ms "
                f"({conv / base['convert_ms_mean']:.2f}x)  {size / 1024:.1f} KiB "
                f"({size / base['response_bytes_mean']:.2f}x)"
            )
        same = r["float16_same_page_share"]
        print(
            f"  float16: reranked page identical to float32's in {same:.1%} of queries; "
            f"nDCG@{K} {r['float16_ndcg']:.4f} vs {r['float32_ndcg']:.4f}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", action="store_true")
    ap.add_argument("--items", type=int, default=900)
    ap.add_argument("--queries", type=int, default=150)
    ap.add_argument("--dups", type=int, default=60)
    ap.add_argument(
        "--transfer-rounds",
        type=int,
        default=2,
        help="rounds of the window-transfer comparison over the queries",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t = time.perf_counter()
    result = asyncio.run(run(args))
    result["seconds"] = time.perf_counter() - t
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
