#!/usr/bin/env python3
"""Write the int8 variant of the image tower: ONNX Runtime dynamic quantization of its matrix multiplies.

    python -m tools.quantize.quantize_image_tower          # triton_models/clip_image -> clip_image_int8
    python -m tools.quantize.quantize_image_tower --source-onnx X.onnx --output Y.onnx

What it does: `onnxruntime.quantization.quantize_dynamic` with op_types_to_quantize = MatMul and Gemm
(the transformer's projections and MLPs: almost all of the FLOPs). Their weights are stored as 8-bit
int8 with one scale per output channel; activations are quantized to uint8 per batch at run time
(DynamicQuantizeLinear -> MatMulInteger). The patch convolution, LayerNorms, softmax and the input
normalisation stay fp32, as do the tensor names and types, so the result is a drop-in model with the same
contract: the encoder serves it with IMAGESEARCH_ENCODER_IMAGE_VARIANT=int8 (model '<image_model>_int8',
same embedding space, same ModelRef). The choice is recorded in the model's metadata
(imagesearch.quantization).

The output goes to <repository>/<target>/<version>/model.onnx with the source's version number. After
writing, it compares fp32 and int8 embeddings on --check-images random-content images (a smoke check;
bench/encoder_int8.py measures speed and agreement on real images).

Why these defaults (bench/encoder_int8.py --model vit-b-32, all four variants, 2 cores):
- per-channel scales, full 8-bit weight range: the closest to fp32 on both machines measured (min
  embedding cosine 0.9992 on the 2026-11-22 host, recorded as AVX2 without VNNI, and 0.9994 on an AVX-512
  VNNI host; speed-up 1.66x / 1.78x and 2.30-2.54x / 2.54x at batch 8 / 32). One scale per tensor: 0.9992 and
  0.9991, at the 0.999 bar; 7-bit weights (reduce_range): 0.9971 per tensor, 0.9987 per channel.
- --reduce-range (7-bit weights) is for hosts without VNNI (AVX2 only): there ONNX Runtime multiplies
  u8 x s8 with an instruction whose 16-bit sums saturate, which full-range weights can hit: the demo's trained
  text transformer gave cosine 0.94 with full-range weights on such a host and 0.9993 with 7-bit ones
  (the random-weight ViT-B/32 did not hit it). With VNNI there is no saturation (the same text transformer:
  0.9987-0.9990 for every variant). Quantize with --reduce-range for an AVX2-only fleet, and check with
  bench/encoder_int8.py on the real weights.
- ONNX Runtime's quant_pre_process (which quantize_dynamic suggests) made the result slower: not used.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

REPO = Path(__file__).resolve().parents[2]


def latest_version(model_dir: Path) -> str:
    versions = sorted((int(p.name) for p in model_dir.iterdir() if p.name.isdigit()), reverse=True)
    for v in versions:
        if (model_dir / str(v) / "model.onnx").is_file():
            return str(v)
    raise SystemExit(f"no <version>/model.onnx under {model_dir}")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """quantize_dynamic logs a warning suggesting quant_pre_process (measured: it does not help here)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize(source: Path, output: Path, *, per_channel: bool = True, reduce_range: bool = False) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, _quiet_root_logger():
        staged = Path(tmp) / "model.onnx"
        quantize_dynamic(
            source,
            staged,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
        )
        model = onnx.load(str(staged))
        model.producer_name = "imagesearch tools/quantize"
        meta = {p.key: p.value for p in model.metadata_props}
        meta["imagesearch.quantization"] = (
            f"onnxruntime {ort.__version__} quantize_dynamic MatMul+Gemm int8 "
            f"per_channel={per_channel} reduce_range={reduce_range} source={source.name}"
        )
        del model.metadata_props[:]
        for key, value in meta.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(staged))
        staged.replace(output)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def smoke_check(source: Path, output: Path, n_images: int, threads: int) -> tuple[float, float]:
    """(min cosine fp32 vs int8, int8 speed-up at this batch) on smooth random-content images."""
    rng = np.random.default_rng(0)
    grid = rng.integers(0, 256, (n_images, 7, 7, 3)).astype(np.uint8)
    pixels = np.repeat(np.repeat(grid, 32, axis=1), 32, axis=2)  # blocky but image-like, 224x224
    fp32, int8 = _session(source, threads), _session(output, threads)
    name = fp32.get_inputs()[0].name
    timings = []
    outs = []
    for sess in (fp32, int8):
        sess.run(None, {name: pixels})
        start = time.perf_counter()
        outs.append(sess.run(None, {name: pixels})[0])
        timings.append(time.perf_counter() - start)
    a, b = outs
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min()), timings[0] / timings[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-repository", type=Path, default=REPO / "triton_models")
    parser.add_argument("--source", default="clip_image", help="source model name in the repository")
    parser.add_argument("--target", default=None, help="target model name (default: <source>_int8)")
    parser.add_argument("--source-onnx", type=Path, default=None, help="quantize this file instead")
    parser.add_argument("--output", type=Path, default=None, help="write here instead of the repository")
    parser.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor")
    parser.add_argument("--reduce-range", action="store_true", help="7-bit weights (for CPUs without VNNI)")
    parser.add_argument("--check-images", type=int, default=8, help="images for the smoke check (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    if args.source_onnx is not None:
        source = args.source_onnx
        output = args.output or source.with_name(source.stem + ".int8.onnx")
    else:
        model_dir = args.model_repository / args.source
        version = latest_version(model_dir)
        source = model_dir / version / "model.onnx"
        target = args.target or f"{args.source}_int8"
        output = args.output or args.model_repository / target / version / "model.onnx"
    start = time.perf_counter()
    quantize(source, output, per_channel=not args.per_tensor, reduce_range=args.reduce_range)
    print(
        f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, from {source.stat().st_size / 1e6:.1f} MB) "
        f"in {time.perf_counter() - start:.1f}s"
    )
    if args.check_images:
        cos, speedup = smoke_check(source, output, args.check_images, args.threads)
        print(f"smoke check on {args.check_images} images: min cosine {cos:.5f}, speed-up {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
