"""Real encoder output for the search benchmark: the demo model's embeddings of its own image set.

    python -m bench.search --n 100000 --vectors demo ...   # uses at most the 12,471 demo images

Image vectors: every image of models/demo/manifest.jsonl (from the data cache that
tools/models/fetch_data.py fills) through the encoder's preprocessing and the demo image tower
(triton_models/clip_image, in-process ONNX Runtime). Query vectors: the demo text tower's embedding of
the caption of each held-out image (models/demo/split_heldout.txt), i.e. real text->image queries whose
images the model was not trained on. Computed once and cached under ~/.cache/imagesearch/bench/, keyed by
the two ONNX files' hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("IMAGESEARCH_DATA_CACHE", Path.home() / ".cache/imagesearch/data"))
CACHE = Path.home() / ".cache/imagesearch/bench"


@dataclass
class DemoVectors:
    images: np.ndarray  # [n, d] L2-normalised
    captions: list[str]
    tags: list[tuple[str, ...]]
    query_texts: list[str]
    query_vectors: np.ndarray  # [m, d] L2-normalised


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load() -> DemoVectors:
    from bench.encoder_int8 import embed, session
    from services.encoder.preprocess import decode_image
    from services.encoder.tokenizer import ClipTokenizer

    image_onnx = REPO / "triton_models/clip_image/1/model.onnx"
    text_onnx = REPO / "triton_models/clip_text/1/model.onnx"
    manifest = [json.loads(line) for line in (REPO / "models/demo/manifest.jsonl").read_text().splitlines()]
    records = [r for r in manifest if (DATA / r["path"]).is_file()]
    if not records:
        raise SystemExit(f"no demo images under {DATA}: run python -m tools.models.fetch_data first")
    heldout = set((REPO / "models/demo/split_heldout.txt").read_text().split())
    query_texts = sorted({r["caption"] for r in records if r["id"] in heldout})
    cached = CACHE / f"demo-vectors-{_sha(image_onnx)}-{_sha(text_onnx)}-{len(records)}.npz"
    if cached.is_file():
        z = np.load(cached)
        images, queries = z["images"], z["queries"]
    else:
        print(
            f"demo vectors: embedding {len(records)} images and {len(query_texts)} captions", file=sys.stderr
        )
        with ThreadPoolExecutor(2) as pool:  # Pillow releases the GIL while decoding and resizing
            pixels = np.stack(
                list(
                    pool.map(
                        lambda r: decode_image(
                            (DATA / r["path"]).read_bytes(), 224, 40_000_000, "rgb_on_white"
                        ),
                        records,
                    )
                )
            )
        images = embed(session(image_onnx, 2), pixels, 64).astype(np.float32)
        queries = embed(session(text_onnx, 2), ClipTokenizer()(query_texts).ids, 64).astype(np.float32)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.savez(cached, images=images, queries=queries)
    return DemoVectors(
        images=images,
        captions=[r["caption"] for r in records],
        tags=[tuple(r.get("texts", ())[:3]) for r in records],
        query_texts=query_texts,
        query_vectors=queries,
    )
