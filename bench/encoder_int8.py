#!/usr/bin/env python3
"""int8 image tower vs fp32: throughput (raw ONNX Runtime, batch 1/8/32) and agreement of embeddings.

    python -m bench.encoder_int8                    # the demo model (triton_models/clip_image[_int8])
    python -m bench.encoder_int8 --model vit-b-32   # full-size ViT-B/32, random weights
    python -m bench.encoder_int8 --variants default per_tensor reduce_range per_tensor_reduce_range

Agreement is measured on real images: the demo model's held-out split (models/demo/split_heldout.txt,
images from the data cache of tools/models/fetch_data.py; synthetic scenes when the cache is absent):
- cosine between the fp32 and int8 embedding of each image (min, 1st percentile, mean);
- for the demo model, held-out text->image recall@1/5/10 with each image tower (text tower fp32), with
  the protocol of tools/models/export_demo.py (one query per caption group: its first image's caption;
  gallery: every held-out image; a hit is any image of the group in the top k).
Random weights (vit-b-32) make all embeddings alike, so their cosine says little; judge accuracy on the
demo model.

Speed: the fp32 and int8 sessions and the batch sizes run interleaved (--repeats rounds, median), with
--threads intra-op threads and thread spinning off as served (--spinning turns it on), on the
preprocessed pixels (no decoding in the timing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from bench.encoder_models import build as build_onnx
from devstack import cache_dir
from services.encoder.backends.onnxruntime import session_options
from services.encoder.preprocess import decode_image
from services.encoder.tokenizer import ClipTokenizer
from tools.quantize.quantize_image_tower import quantize

REPO = Path(__file__).resolve().parents[1]

DATA = Path(os.environ.get("IMAGESEARCH_DATA_CACHE", Path.home() / ".cache/imagesearch/data"))
VARIANTS = {  # "default" is what tools/quantize writes: per-channel scales, 8-bit weights
    "default": {"per_channel": True, "reduce_range": False},
    "per_tensor": {"per_channel": False, "reduce_range": False},
    "reduce_range": {"per_channel": True, "reduce_range": True},
    "per_tensor_reduce_range": {"per_channel": False, "reduce_range": True},
}


def say(msg: str) -> None:
    print(f"[int8] {msg}", file=sys.stderr, flush=True)


def session(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def heldout(limit: int) -> tuple[list[dict[str, Any]], np.ndarray] | None:
    """Held-out records and their preprocessed pixels (the encoder's own preprocessing), or None."""
    manifest = REPO / "models/demo/manifest.jsonl"
    split = REPO / "models/demo/split_heldout.txt"
    if not (manifest.is_file() and split.is_file() and DATA.is_dir()):
        return None
    ids = set(split.read_text().split())
    records = [r for r in map(json.loads, manifest.read_text().splitlines()) if r["id"] in ids]
    records = [r for r in records if (DATA / r["path"]).is_file()][:limit]
    if not records:
        return None
    pixels = np.stack(
        [decode_image((DATA / r["path"]).read_bytes(), 224, 40_000_000, "rgb_on_white") for r in records]
    )
    return records, pixels


def synthetic(n: int) -> np.ndarray:
    import io

    from PIL import Image

    from tests.encoder.parity_images import _scene

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(_scene(320, 240, seed=i)).save(buf, "PNG")
        out.append(decode_image(buf.getvalue(), 224, 40_000_000))
    return np.stack(out)


def embed(sess: ort.InferenceSession, rows: np.ndarray, batch: int = 32) -> np.ndarray:
    name = sess.get_inputs()[0].name
    out = np.concatenate([sess.run(None, {name: rows[i : i + batch]})[0] for i in range(0, len(rows), batch)])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def recall(
    records: list[dict[str, Any]], image_emb: np.ndarray, text_sess: ort.InferenceSession
) -> dict[str, float]:
    groups = [r["group"] for r in records]
    first: dict[str, int] = {}
    for j, g in enumerate(groups):
        first.setdefault(g, j)
    query_groups = sorted(first)
    ids = ClipTokenizer()([records[first[g]]["caption"] for g in query_groups]).ids
    text_emb = embed(text_sess, ids, 64)
    top = np.argsort(-(text_emb @ image_emb.T), axis=1)[:, :10]
    hit = np.asarray(groups)[top] == np.asarray(query_groups)[:, None]
    return {f"recall@{k}": round(float(hit[:, :k].any(1).mean()), 4) for k in (1, 5, 10)}


def text_proxy(
    records: list[dict[str, Any]],
    image_emb: np.ndarray,
    text_path: Path,
    work: Path,
    options: ort.SessionOptions,
    variant: str,
) -> dict[str, Any]:
    """The same quantization on the demo's text tower: a trained transformer, whose matrix multiplies are
    where int8 acts (the demo image tower is a CNN with a single Gemm)."""
    target = work / f"text_int8_{variant}.onnx"
    quantize(text_path, target, **VARIANTS[variant])
    fp32, int8 = session(text_path, options), session(target, options)
    captions = sorted({r["caption"] for r in records})
    ids = ClipTokenizer()(captions).ids
    a, b = embed(fp32, ids, 64), embed(int8, ids, 64)
    cos = np.sum(a * b, axis=1)
    return {
        "texts": len(captions),
        "cosine_min": round(float(cos.min()), 5),
        "cosine_p1": round(float(np.percentile(cos, 1)), 5),
        "cosine_mean": round(float(cos.mean()), 5),
        "recall_fp32_text": recall(records, image_emb, fp32),
        "recall_int8_text": recall(records, image_emb, int8),
    }


def speed(
    sessions: dict[str, ort.InferenceSession], pixels: np.ndarray, batches: list[int], repeats: int
) -> dict:
    """Median images/s per session and batch size. Each repeat runs every batch size (order reversed every
    other repeat) and every session, so both the int8/fp32 ratios and the batch sizes compare runs
    seconds apart on a host whose speed drifts."""
    rows = {batch: np.take(pixels, range(batch), axis=0, mode="wrap") for batch in batches}
    times: dict[tuple[str, int], list[float]] = {(name, b): [] for name in sessions for b in batches}
    for batch in batches:
        for sess in sessions.values():
            sess.run(None, {"pixels": rows[batch]})  # warm-up at this shape
    for repeat in range(repeats):
        for batch in batches if repeat % 2 == 0 else batches[::-1]:
            for name, sess in sessions.items():
                start = time.perf_counter()
                sess.run(None, {"pixels": rows[batch]})
                times[name, batch].append(time.perf_counter() - start)
    out: dict[str, dict[str, float]] = {name: {} for name in sessions}
    for batch in batches:
        for name in sessions:
            out[name][f"batch_{batch}_img_s"] = round(batch / float(np.median(times[name, batch])), 2)
        rates = ", ".join(f"{n} {out[n][f'batch_{batch}_img_s']} img/s" for n in sessions)
        say(f"batch {batch}: {rates}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["demo", "vit-b-32"], default="demo")
    parser.add_argument(
        "--repository", type=Path, default=REPO / "triton_models", help="demo model repository"
    )
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["default", "per_tensor"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--spinning",
        action="store_true",
        help="let idle ONNX Runtime threads spin-wait (off by default, as Triton and the embedded backend)",
    )
    parser.add_argument("--images", type=int, default=1300, help="held-out images for agreement and recall")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.model == "vit-b-32" else 10)

    work = Path(tempfile.mkdtemp(prefix="int8-bench-"))
    if args.model == "demo":
        fp32_path = args.repository / "clip_image/1/model.onnx"
        text_path = args.repository / "clip_text/1/model.onnx"
        if not fp32_path.is_file():
            raise SystemExit(f"the demo model is not in {args.repository} yet")
    else:
        fp32_path, text_path = build_onnx("vit-b-32", cache_dir() / "bench" / "vit-b-32")
    quantized: dict[str, Path] = {}
    for variant in args.variants:
        target = work / f"{variant}.onnx"
        start = time.perf_counter()
        quantize(fp32_path, target, **VARIANTS[variant])
        quantized[variant] = target
        size_mb = target.stat().st_size / 1e6
        say(f"quantized {variant} in {time.perf_counter() - start:.1f}s ({size_mb:.1f} MB)")

    data = heldout(args.images if args.model == "demo" else min(args.images, 256))
    if data is None:
        say("no data cache: agreement measured on synthetic scenes")
        records, pixels = None, synthetic(64)
    else:
        records, pixels = data
    say(f"{len(pixels)} images for agreement")

    options = session_options(args.threads, args.spinning)
    sessions = {"fp32": session(fp32_path, options)} | {
        f"int8_{v}": session(p, options) for v, p in quantized.items()
    }
    report: dict[str, Any] = {
        "model": args.model,
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "spinning": args.spinning,
        "cpus": os.cpu_count(),
        "images_for_agreement": int(len(pixels)),
        "agreement_images": "demo held-out split" if records else "synthetic scenes",
        "speed": speed(sessions, pixels, args.batches, repeats),
        "repeats": repeats,
    }
    base = embed(sessions["fp32"], pixels)
    # Retrieval and the text-tower proxy only mean something for the trained demo model.
    text_sess = session(text_path, options) if records and args.model == "demo" else None
    if records and text_sess is not None:
        report["fp32_recall"] = recall(records, base, text_sess)
    for variant in quantized:
        name = f"int8_{variant}"
        emb = embed(sessions[name], pixels)
        cos = np.sum(emb * base, axis=1)
        entry: dict[str, Any] = {
            "cosine_min": round(float(cos.min()), 5),
            "cosine_p1": round(float(np.percentile(cos, 1)), 5),
            "cosine_mean": round(float(cos.mean()), 5),
            "speedup": {
                f"batch_{b}": round(
                    report["speed"][name][f"batch_{b}_img_s"] / report["speed"]["fp32"][f"batch_{b}_img_s"], 3
                )
                for b in args.batches
            },
        }
        if records and text_sess is not None:
            entry["recall"] = recall(records, emb, text_sess)
        report[name] = entry
        say(f"{name}: {entry}")
    if records and text_sess is not None:
        for variant in quantized:
            proxy = text_proxy(records, base, text_path, work, options, variant)
            report[f"text_tower_proxy_{variant}"] = proxy
            say(f"text tower proxy ({variant}): {proxy}")
    out = args.out or cache_dir() / "bench" / f"encoder-int8-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
