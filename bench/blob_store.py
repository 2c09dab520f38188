"""What keeping originals costs at ingest and what serving them costs: put/get/stat of the local
directory store against MinIO (started by devstack when it is not running, stopped after), same images,
same run, plus the thumbnail that ingest makes per new image.

    .venv/bin/python -m bench.blob_store [--images 200] [--kib 300] [--concurrency 1,8]

Reports p50/p99 ms per operation and store, the MinIO/local ratio of p50, and thumbnail ms per image.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
from PIL import Image

from devstack import REPO_ROOT, Stack
from services.gateway.backends.blobs import BlobKey, BlobStore
from services.gateway.backends.blobs.local import LocalBlobStore
from services.gateway.backends.blobs.s3 import S3BlobStore
from services.gateway.domain import ImageVariant
from services.gateway.thumbnails import make_thumbnail


def _images(count: int, kib: int) -> list[bytes]:
    """JPEGs of about `kib` KiB (noise over a gradient: compresses like a photo, not like a flat fill)."""
    rng = np.random.default_rng(0)
    side = int((kib * 1024 / 0.53) ** 0.5)  # ~0.53 bytes per pixel at quality 90 for this content
    out = []
    for _ in range(count):
        base = np.linspace(0, 255, side, dtype=np.float32)[None, :, None] * np.ones((side, 1, 3), np.float32)
        pixels = np.clip(base + rng.normal(0, 24, (side, side, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


async def _timed(
    op: Callable[[BlobKey, bytes], Awaitable[object]], work: list[tuple[BlobKey, bytes]], conc: int
) -> list[float]:
    sem = asyncio.Semaphore(conc)
    samples: list[float] = []

    async def one(key: BlobKey, data: bytes) -> None:
        async with sem:
            t0 = time.perf_counter()
            await op(key, data)
            samples.append(time.perf_counter() - t0)

    await asyncio.gather(*(one(k, d) for k, d in work))
    return samples


async def _measure(store: BlobStore, images: list[bytes], conc: int) -> dict[str, tuple[float, float]]:
    work = [(BlobKey("bench", hashlib.sha256(d).hexdigest(), ImageVariant.ORIGINAL), d) for d in images]
    results = {
        "put": _summary(await _timed(lambda k, d: store.put(k, d, "image/jpeg"), work, conc)),
        "get": _summary(await _timed(lambda k, d: store.get(k), work, conc)),
        "stat": _summary(await _timed(lambda k, d: store.stat(k), work, conc)),
    }
    results["delete"] = _summary(await _timed(lambda k, d: store.delete(k), work, conc))
    return results


async def _run(args: argparse.Namespace, s3_env: dict[str, str]) -> None:
    images = _images(args.images, args.kib)
    mean_kib = sum(map(len, images)) / len(images) / 1024
    t0 = time.perf_counter()
    for data in images[:50]:
        make_thumbnail(data, 256, 85)
    thumb_ms = (time.perf_counter() - t0) * 1000 / min(50, len(images))
    print(
        f"{len(images)} JPEGs, mean {mean_kib:.0f} KiB; thumbnail (256 px JPEG) {thumb_ms:.1f} ms per image"
    )
    local = LocalBlobStore(Path(tempfile.mkdtemp(prefix="bench-blobs-")))
    s3 = S3BlobStore(
        s3_env["IMAGESEARCH_GATEWAY_BLOB_S3_ENDPOINT"],
        "bench-blobs",
        s3_env["IMAGESEARCH_GATEWAY_BLOB_S3_ACCESS_KEY"],
        s3_env["IMAGESEARCH_GATEWAY_BLOB_S3_SECRET_KEY"],
        secure=False,
        region=None,
        create_bucket=True,
        timeout_s=10.0,
    )
    await s3.ready()
    for conc in args.concurrency:
        res_local = await _measure(local, images, conc)
        res_s3 = await _measure(s3, images, conc)
        print(f"\nconcurrency {conc}:  op      local p50/p99 ms     MinIO p50/p99 ms    MinIO/local (p50)")
        for op in ("put", "get", "stat", "delete"):
            (lp50, lp99), (sp50, sp99) = res_local[op], res_s3[op]
            print(
                f"{'':15}{op:7} {lp50:8.2f} / {lp99:7.2f}    {sp50:8.2f} / {sp99:7.2f}    {sp50 / lp50:8.1f}x"
            )
    await s3.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--kib", type=int, default=300)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    args = parser.parse_args()
    stack = Stack(REPO_ROOT)
    info = stack.up(only=["minio"])
    try:
        asyncio.run(_run(args, dict(info.service_env)))
    finally:
        stack.down(only=info.started)


if __name__ == "__main__":
    main()
