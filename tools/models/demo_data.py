"""The demo model's data: the manifest written by fetch_data.py, and its images decoded once into
cached arrays (shared by training and by the export's evaluation)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from tools.models import clip_preprocess

DEFAULT_CACHE = Path(os.environ.get("IMAGESEARCH_DATA_CACHE", Path.home() / ".cache/imagesearch/data"))


def log(msg: str) -> None:
    print(f"[demo_data {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_manifest(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def decode112(path: str) -> np.ndarray:
    try:
        a = clip_preprocess.premultiplied_rgba(path).astype(np.float32)
    except Exception as e:  # pragma: no cover - corrupt file
        log(f"cannot decode {path}: {e}")
        a = np.zeros((224, 224, 4), np.float32)
    a = a.reshape(112, 2, 112, 2, 4).mean(axis=(1, 3))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def decode224(path: str) -> np.ndarray:
    return clip_preprocess.load(path)


def decode224_white(path: str) -> np.ndarray:
    return clip_preprocess.load_white(path)


def cached_array(cache: Path, name: str, paths: list[str], fn, workers: int) -> np.ndarray:
    key = hashlib.sha256(("\n".join(paths) + name).encode()).hexdigest()[:16]
    out = cache / "cache" / f"{name}_{key}.npy"
    if out.exists():
        return np.load(out, mmap_mode=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"decoding {len(paths)} images -> {out} ({workers} workers)")
    t = time.time()
    with Pool(workers) as pool:
        arrs = pool.map(fn, paths, chunksize=32)
    arr = np.stack(arrs)
    tmp = out.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.rename(out)
    log(f"decoded in {time.time() - t:.0f}s")
    return arr
