#!/usr/bin/env python3
"""Encoder benchmark: images/s and texts/s with p50/p95/p99 latency, at batch 1/8/32 and concurrency
1/8/32, for the runtimes below, measured in the same run on the same cores:

  raw       ONNX Runtime in this process on ready-made tensors (no preprocessing, no RPC): the baseline
  raw+prep  the same, but each request first decodes/resizes its JPEGs (2 threads, the service's own
            function) or tokenizes its texts: what any in-process user of the model pays
  embedded  the encoder service process with its in-process ONNX Runtime (gRPC, preprocessing, batching)
  triton    the encoder service process calling a real Triton (python backend running ONNX Runtime)

Each cell (kind, batch, concurrency) runs the runtimes in --rounds rounds (3), in a rotated order each
round, and sums each runtime's rounds, so the ratios compare runs seconds apart and a machine whose speed
drifts during the cell favours none of them. Ratios, per cell:
  ratio     items/s over raw's in the same cell;        r_prep    over raw+prep's in the same cell;
  r_seq     items/s over raw's at the same batch with concurrency 1 (raw's best case on idle cores);
  r_cpu     items per CPU-second over raw's (CPU of every process involved: this client, the service,
            Triton and its python-backend stubs); robust to other load on a shared machine, where
            wall-clock ratios are not;                 r_cpu_p   the same over raw+prep's.
The services receive JPEG bytes and plain texts. All ONNX Runtime sessions run with --threads intra-op
threads and thread spinning off (as the services and Triton do; --raw-spinning turns it on for raw).

    python -m bench.encoder                         # the demo model in triton_models/ (full matrix)
    python -m bench.encoder --model photo           # the photo package (the default; two image vectors)
    python -m bench.encoder --model vit-b-32        # full-size ViT-B/32, random weights (bounded)
    python -m bench.encoder --model tiny --quick    # smoke run on the 2-layer stand-in

Bounded: each runtime gets --cell-seconds per cell (and at least one request per worker a round); cells
whose first wave (batch x concurrency) would exceed --max-items are skipped (vit-b-32 at batch 32 x
concurrency 32: 1024 images).
Writes a JSON report (--out) and prints the table. Loopback only; starts its own Triton (devstack,
private state directory) and its own service processes.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from PIL import Image

from bench.encoder_models import build as build_onnx
from bench.proctree import cpu_seconds, descendants
from devstack import Stack, cache_dir
from services.encoder.backends.onnxruntime import session_options
from services.encoder.package import ModelPackage, load_package
from services.encoder.preprocess import decode_image
from services.encoder.tokenizer import tokenizer_for
from tests.service_process import ServiceProcess

REPO = Path(__file__).resolve().parents[1]

TOWERS = ("clip_image", "clip_text")
PHOTO_TOWERS = ("photo_image", "photo_text")
CAPTIONS = [
    "a lion",
    "a red vintage car parked by the sea",
    "flag of Japan",
    "a smiling cat face emoji",
    "a photo of a dog playing with a ball in the park",
    "pizza",
    "a hand-drawn black and white sketch of a house with a garden and a tree",
    "keycap number five",
    "a bicycle leaning against a brick wall on a rainy afternoon in the city centre",
    "three people sitting at a table",
]


@dataclass
class Cell:
    runtime: str
    kind: str
    batch: int
    concurrency: int
    items: int = 0
    seconds: float = 0.0
    items_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    errors: int = 0
    cpu_s: float = 0.0  # CPU seconds of every process involved (bench client, service, Triton + stubs)
    items_per_cpu_s: float = 0.0
    ratio_cpu: float | None = None  # items per CPU-second, over raw ONNX Runtime's in the same cell
    ratio_prep: float | None = None  # items/s over raw+prep's in the same cell (the cost of serving alone)
    ratio_cpu_prep: float | None = None  # items per CPU-second over raw+prep's in the same cell
    ratio: float | None = None  # vs raw ONNX Runtime in the same cell (same batch and concurrency)
    ratio_seq: float | None = None  # vs raw ONNX Runtime at the same batch, sequential (concurrency 1)
    skipped: str | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values), q))


# ---- setup -----------------------------------------------------------------------------------------


def model_repository(model: str, root: Path, demo: Path) -> Path:
    """A repository with triton_models/'s configs and model.py and the chosen ONNX towers."""
    if model == "photo":  # the package's own towers (triton_models/photo_*, linked to the package's files)
        repo = root / "models-photo"
        for tower in PHOTO_TOWERS:
            (repo / tower / "1").mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / "triton_models" / tower / "config.pbtxt", repo / tower / "config.pbtxt")
            shutil.copy2(REPO / "triton_models" / tower / "1" / "model.py", repo / tower / "1" / "model.py")
            (repo / tower / "1" / "model.onnx").symlink_to(
                (REPO / "triton_models" / tower / "1" / "model.onnx").resolve(strict=True)
            )
        return repo
    if model == "demo":
        if not all((demo / t / "1" / "model.onnx").is_file() for t in TOWERS):
            raise SystemExit(f"the demo model is not in {demo} (clip_*/1/model.onnx); try --model tiny")
        source = {t: demo / t / "1" / "model.onnx" for t in TOWERS}
    else:
        image, text = build_onnx(model, cache_dir() / "bench" / model)
        source = {"clip_image": image, "clip_text": text}
    repo = root / f"models-{model}"
    for tower in TOWERS:
        (repo / tower / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / "triton_models" / tower / "config.pbtxt", repo / tower / "config.pbtxt")
        shutil.copy2(REPO / "triton_models" / tower / "1" / "model.py", repo / tower / "1" / "model.py")
        target = repo / tower / "1" / "model.onnx"
        if not target.exists():
            target.symlink_to(source[tower])
    return repo


def jpeg_images(n: int, size: tuple[int, int]) -> list[bytes]:
    from tests.encoder.parity_images import _scene

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(_scene(size[0], size[1], seed=i)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def texts(n: int) -> list[str]:
    return [f"{CAPTIONS[i % len(CAPTIONS)]} number {i}" for i in range(n)]


# ---- runners -----------------------------------------------------------------------------------------


class RawOrt:
    """ONNX Runtime sessions in this process on the package's tower files, fed with ready-made tensors
    (every output computed, as the services do)."""

    def __init__(self, package: ModelPackage, threads: int, spinning: bool) -> None:
        options = session_options(threads, spinning)
        self.sessions = {
            "images": ort.InferenceSession(str(package.tower("image").file), options),
            "texts": ort.InferenceSession(str(package.tower("text").file), options),
        }

    def run(self, kind: str, feed: dict[str, np.ndarray]) -> None:
        self.sessions[kind].run(None, feed)


def run_raw(
    raw: RawOrt,
    name: str,
    kind: str,
    make_rows: Callable[[int, int], dict[str, np.ndarray]],
    batch: int,
    concurrency: int,
    seconds: float,
) -> Cell:
    """`concurrency` threads calling ONNX Runtime in this process; make_rows(start, n) -> input tensor."""
    cell = Cell(name, kind, batch, concurrency)
    me = {os.getpid()}
    stop_at = time.perf_counter() + seconds
    lock = threading.Lock()

    def worker(w: int) -> None:
        i = w * batch
        done_one = False
        while not done_one or time.perf_counter() < stop_at:
            start = time.perf_counter()
            raw.run(kind, make_rows(i, batch))
            elapsed = time.perf_counter() - start
            with lock:
                cell.latencies_ms.append(elapsed * 1000)
                cell.items += batch
            i += batch * concurrency
            done_one = True

    raw.run(kind, make_rows(0, batch))  # warm-up at this shape
    cpu_start = cpu_seconds(me)
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as executor:
        list(executor.map(worker, range(concurrency)))
    cell.seconds = time.perf_counter() - start
    cell.cpu_s = cpu_seconds(me) - cpu_start
    return cell


async def run_service(
    stub: encoder_pb2_grpc.EncoderServiceStub,
    name: str,
    kind: str,
    images: list[bytes],
    captions: list[str],
    batch: int,
    concurrency: int,
    seconds: float,
    pids: set[int],
) -> Cell:
    cell = Cell(name, kind, batch, concurrency)

    def request(i: int) -> Any:
        if kind == "images":
            items = [encoder_pb2.ImageInput(data=images[(i + k) % len(images)]) for k in range(batch)]
            return stub.EncodeImages(encoder_pb2.EncodeImagesRequest(images=items), timeout=600)
        items_t = [encoder_pb2.TextInput(text=captions[(i + k) % len(captions)]) for k in range(batch)]
        return stub.EncodeTexts(encoder_pb2.EncodeTextsRequest(texts=items_t), timeout=600)

    await request(0)  # warm-up
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = w * batch
        done_one = False
        while not done_one or time.perf_counter() < stop_at:
            start = time.perf_counter()
            try:
                response = await request(i)
                bad = sum(1 for r in response.results if r.HasField("error"))
            except grpc.RpcError:
                bad = batch
            cell.latencies_ms.append((time.perf_counter() - start) * 1000)
            cell.items += batch - bad
            cell.errors += bad
            i += batch * concurrency
            done_one = True

    cpu_start = cpu_seconds(pids)
    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    cell.seconds = time.perf_counter() - start
    cell.cpu_s = cpu_seconds(pids) - cpu_start
    return cell


RUNTIMES = ("raw", "raw+prep", "embedded", "triton")


def _ratio(value: float, reference: float | None) -> float | None:
    return round(value / reference, 3) if reference else None


def merge(parts: list[Cell]) -> Cell:
    """One cell from its rounds: items, time and CPU summed, latencies pooled."""
    cell = Cell(parts[0].runtime, parts[0].kind, parts[0].batch, parts[0].concurrency)
    for part in parts:
        cell.items += part.items
        cell.errors += part.errors
        cell.seconds += part.seconds
        cell.cpu_s += part.cpu_s
        cell.latencies_ms.extend(part.latencies_ms)
    return cell


def finish(cell: Cell) -> Cell:
    cell.requests = len(cell.latencies_ms)
    cell.items_per_s = cell.items / cell.seconds if cell.seconds else 0.0
    cell.items_per_cpu_s = cell.items / cell.cpu_s if cell.cpu_s else 0.0
    cell.p50_ms = percentile(cell.latencies_ms, 50)
    cell.p95_ms = percentile(cell.latencies_ms, 95)
    cell.p99_ms = percentile(cell.latencies_ms, 99)
    return cell


# ---- main --------------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="encoder-bench-"))
    repo = model_repository(args.model, work, args.repository)
    package_name = "photo" if args.model == "photo" else "demo"
    package = load_package(package_name, REPO / "models", repo)
    say(f"model repository {repo} ({args.model}, package {package.name})")

    images = jpeg_images(args.images, (args.image_width, args.image_height))
    captions = texts(args.texts)
    tok = package.manifest.tokenizer
    tokenizer = tokenizer_for(tok.kind, tok.max_length, package.tokenizer_file)
    pre = package.manifest.preprocessing.image
    start = time.perf_counter()
    pixels = np.stack([decode_image(b, pre.size, 40_000_000, pre.color_mode) for b in images])
    decode_ms = (time.perf_counter() - start) * 1000 / len(images)
    text_inputs = [t.name for t in package.tower("text").inputs]
    say(
        f"{len(images)} JPEG {args.image_width}x{args.image_height} (decode+resize {decode_ms:.2f} ms each), "
        f"{len(captions)} texts"
    )

    raw = RawOrt(package, args.threads, args.raw_spinning)
    stack = Stack(work / "stack", model_repository=repo)
    triton = stack.up(only=["triton"])
    services: dict[str, ServiceProcess] = {}
    common_env = {
        "IMAGESEARCH_ENCODER_LOG_LEVEL": "warning",
        # The service caps every runtime call at this (30 s by default); long queues at high concurrency on
        # a heavy model need more.
        "IMAGESEARCH_ENCODER_DEFAULT_DEADLINE_S": "600",
        "IMAGESEARCH_ENCODER_MAX_BATCH_IMAGES": "64",
        "IMAGESEARCH_ENCODER_ORT_INTRA_OP_THREADS": str(args.threads),
        "IMAGESEARCH_ENCODER_MODEL_PACKAGE": package_name,
    }
    try:
        services["embedded"] = ServiceProcess(
            "services.encoder", env={**common_env, "IMAGESEARCH_ENCODER_MODEL_REPOSITORY": str(repo)}
        ).start(timeout_s=300)
        services["triton"] = ServiceProcess(
            "services.encoder",
            env={
                **common_env,
                "IMAGESEARCH_ENCODER_BACKEND": "triton",
                "IMAGESEARCH_ENCODER_TRITON_GRPC_URL": str(triton.triton_grpc_url),
            },
        ).start(timeout_s=300)
        channels = {
            name: grpc.aio.insecure_channel(
                svc.address,
                options=[
                    ("grpc.max_send_message_length", 64 << 20),
                    ("grpc.max_receive_message_length", 64 << 20),
                ],
            )
            for name, svc in services.items()
        }
        stubs = {name: encoder_pb2_grpc.EncoderServiceStub(ch) for name, ch in channels.items()}
        assert services["embedded"].proc is not None and services["triton"].proc is not None
        involved = {
            "embedded": {os.getpid(), services["embedded"].proc.pid},
            "triton": {os.getpid(), services["triton"].proc.pid} | set(descendants(triton.pids["triton"])),
        }

        cells: list[Cell] = []
        baseline: dict[tuple[str, int], float] = {}
        decoders = ThreadPoolExecutor(2, thread_name_prefix="decode")  # like the service's preprocessing pool

        def tokenized(i: int, n: int) -> dict[str, np.ndarray]:
            tensors = tokenizer([captions[(i + k) % len(captions)] for k in range(n)]).tensors()
            return {name: tensors[name] for name in text_inputs}

        def prepared(kind: str) -> Callable[[int, int], dict[str, np.ndarray]]:
            if kind == "texts":  # tokenized once per (start, size): ready-made after the warm-up
                return functools.lru_cache(maxsize=None)(lambda i, n: tokenized(i % len(captions), n))
            return lambda i, n: {"pixels": np.take(pixels, range(i, i + n), axis=0, mode="wrap")}

        def from_inputs(kind: str) -> Callable[[int, int], dict[str, np.ndarray]]:
            if kind == "texts":
                return tokenized

            def decode(data: bytes) -> np.ndarray:
                return decode_image(data, pre.size, 40_000_000, pre.color_mode)

            return lambda i, n: {
                "pixels": np.stack(
                    list(decoders.map(decode, [images[(i + k) % len(images)] for k in range(n)]))
                )
            }

        secs = args.cell_seconds / args.rounds
        for kind in args.kinds:
            for batch in args.batches:
                for concurrency in args.concurrency:
                    first_wave = batch * concurrency
                    limit = args.max_items if kind == "images" else args.max_items * 4
                    if first_wave > limit:
                        for runtime in RUNTIMES:
                            cells.append(
                                Cell(
                                    runtime,
                                    kind,
                                    batch,
                                    concurrency,
                                    skipped=f"first wave {first_wave} > {limit}",
                                )
                            )
                        say(f"{kind} b={batch} c={concurrency}: skipped (first wave of {first_wave} items)")
                        continue
                    # Rounds, each runtime once per round and the order rotated: a machine whose speed drifts
                    # (shared hosts do, by 10 % within minutes) then biases no runtime's total.
                    parts: dict[str, list[Cell]] = {name: [] for name in RUNTIMES}
                    for round_no in range(args.rounds):
                        turn = round_no % len(RUNTIMES)
                        for name in RUNTIMES[turn:] + RUNTIMES[:turn]:
                            if name in ("raw", "raw+prep"):
                                rows = prepared(kind) if name == "raw" else from_inputs(kind)
                                part = await asyncio.to_thread(
                                    run_raw, raw, name, kind, rows, batch, concurrency, secs
                                )
                            else:
                                part = await run_service(
                                    stubs[name],
                                    name,
                                    kind,
                                    images,
                                    captions,
                                    batch,
                                    concurrency,
                                    secs,
                                    involved[name],
                                )
                            parts[name].append(part)
                    row = [finish(merge(parts[name])) for name in RUNTIMES]
                    if concurrency == 1:
                        baseline[(kind, batch)] = row[0].items_per_s
                    raw_cell, prep_cell = row[0], row[1]
                    base = baseline.get((kind, batch))
                    for cell in row:
                        cell.ratio = _ratio(cell.items_per_s, raw_cell.items_per_s)
                        cell.ratio_seq = _ratio(cell.items_per_s, base)
                        cell.ratio_prep = _ratio(cell.items_per_s, prep_cell.items_per_s)
                        cell.ratio_cpu = _ratio(cell.items_per_cpu_s, raw_cell.items_per_cpu_s)
                        cell.ratio_cpu_prep = _ratio(cell.items_per_cpu_s, prep_cell.items_per_cpu_s)
                        cells.append(cell)
                    say(
                        f"{kind} b={batch:2} c={concurrency:2}: "
                        + "  ".join(f"{c.runtime} {c.items_per_s:7.1f}/s p50 {c.p50_ms:7.1f} ms" for c in row)
                    )
        decoders.shutdown()
        for ch in channels.values():
            await ch.close()
    finally:
        for svc in services.values():
            svc.stop()
        stack.down(only=["triton"])
        shutil.rmtree(work, ignore_errors=True)

    return {
        "model": args.model,
        "package": f"{package.name} {package.version}",
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "raw_spinning": args.raw_spinning,
        "image_input": f"JPEG {args.image_width}x{args.image_height} q90, {len(images)} distinct",
        "decode_resize_ms_per_image": round(decode_ms, 3),
        "cell_seconds": args.cell_seconds,
        "rounds": args.rounds,
        "ratio_definition": (
            "ratio / ratio_prep: items/s over raw's / raw+prep's in the same cell; ratio_seq: over raw at "
            "the same batch with concurrency 1; ratio_cpu / ratio_cpu_prep: items per CPU-second (every "
            "process involved) over raw's / raw+prep's in the same cell"
        ),
        "load_average_at_end": os.getloadavg(),
        "cells": [{k: v for k, v in asdict(c).items() if k != "latencies_ms"} for c in cells],
    }


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\nencoder benchmark: model {report['model']}, {report['host']['cpus']} CPUs, "
        f"ONNX Runtime {report['onnxruntime']} ({report['threads']} threads)"
    )
    print(f"images: {report['image_input']}; decode+resize {report['decode_resize_ms_per_image']} ms/image")
    print(f"{report['ratio_definition']}; load average at the end {report['load_average_at_end']}\n")
    print(
        f"{'kind':6} {'batch':>5} {'conc':>4} {'runtime':9} {'items/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'ratio':>6} {'r_prep':>6} {'r_seq':>6} {'it/cpu-s':>8} {'r_cpu':>6} {'r_cpu_p':>7}"
    )

    def fmt(value: float | None, width: int) -> str:
        return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"

    for c in report["cells"]:
        head = f"{c['kind']:6} {c['batch']:5} {c['concurrency']:4} {c['runtime']:9}"
        if c["skipped"]:
            print(f"{head} skipped: {c['skipped']}")
            continue
        errors = f"  ({c['errors']} items failed)" if c["errors"] else ""
        print(
            f"{head} {c['items_per_s']:8.1f} {c['p50_ms']:8.1f} {c['p95_ms']:8.1f} {c['p99_ms']:8.1f} "
            f"{fmt(c['ratio'], 6)} {fmt(c['ratio_prep'], 6)} {fmt(c['ratio_seq'], 6)} "
            f"{c['items_per_cpu_s']:8.1f} {fmt(c['ratio_cpu'], 6)} {fmt(c['ratio_cpu_prep'], 7)}{errors}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["demo", "photo", "vit-b-32", "tiny"], default="demo")
    parser.add_argument(
        "--repository", type=Path, default=REPO / "triton_models", help="where the demo model is"
    )
    parser.add_argument("--kinds", nargs="+", choices=["images", "texts"], default=["images", "texts"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument(
        "--cell-seconds", type=float, default=None, help="measuring time per runtime and cell"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="split each runtime's time per cell into this many rounds, runtimes interleaved",
    )
    parser.add_argument(
        "--max-items",
        type=int,
        default=None,
        help="skip image cells with more in their first wave (batch x concurrency)",
    )
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (all runtimes)")
    parser.add_argument(
        "--raw-spinning",
        action="store_true",
        help="let raw ONNX Runtime's idle threads spin (the services and Triton run with spinning off)",
    )
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--image-width", type=int, default=320)
    parser.add_argument("--image-height", type=int, default=240)
    parser.add_argument(
        "--quick", action="store_true", help="batch 1/8, concurrency 1/8, 1 s per cell, 1 round"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON report path")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    heavy = args.model == "vit-b-32"
    if args.cell_seconds is None:
        args.cell_seconds = 4.0 if heavy else 2.0
    if args.max_items is None:
        args.max_items = 256 if heavy else 1024
    if args.quick:
        args.batches, args.concurrency, args.cell_seconds, args.rounds = [1, 8], [1, 8], 1.0, 1
    started = time.perf_counter()
    report = asyncio.run(bench(args))
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    print_table(report)
    out = args.out or cache_dir() / "bench" / f"encoder-{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nreport: {out} ({report['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
