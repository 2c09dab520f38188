"""Would an int8 image tower be worth offering for a photo package? Builds two int8 candidates of the
package's image.onnx with ONNX Runtime's quantizer and compares each with fp32 on the held-out gallery:
per-image cosine of `semantic` and `visual`, and images/s (one thread, batch 8). Issue 15 offers an
int8 variant only where its cosine to fp32 is >= 0.999 and recall is unchanged.

    .venv/bin/python -m tools.photo_package.int8_check --package models/photo/package [--json OUT]

Candidates (written to a temporary folder, not kept):
- `dynamic`: quantize_dynamic of the MatMul and Gemm nodes (the classifier and the ConSE label matrix),
  int8 weights per channel, as tools/quantize does for the transformer towers;
- `static`: quantize_static in QDQ form of Conv, MatMul and Gemm (per-channel int8 weights, uint8
  activations) calibrated on `--calibration` tune-split images: what a convolutional backbone needs,
  since its convolutions carry almost all of the work.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from tools.photo_package.eval_set import DEFAULT_DATA, OUT_DIR
from tools.photo_package.evaluate import DEFAULT_PACKAGE, batched, gallery_pixels, load_set, session

BAR = 0.999  # issue 15: an int8 variant is offered only at cosine >= 0.999 to fp32
VECTORS = ("semantic", "visual")


class _Images(CalibrationDataReader):
    def __init__(self, pixels: np.ndarray) -> None:
        self._batches = iter([{"pixels": pixels[i : i + 1]} for i in range(len(pixels))])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def vectors(model: ort.InferenceSession, pixels: np.ndarray) -> dict[str, np.ndarray]:
    return batched(lambda x: dict(zip(VECTORS, model.run(list(VECTORS), {"pixels": x}), strict=True)), pixels)


def images_per_s(model: ort.InferenceSession, pixels: np.ndarray, seconds: float = 6.0) -> float:
    batches = [pixels[i : i + 8] for i in range(0, 32, 8)]
    model.run(None, {"pixels": batches[0]})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for batch in batches:
            model.run(None, {"pixels": batch})
            done += len(batch)
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", type=Path, default=DEFAULT_PACKAGE)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--calibration", type=int, default=160, help="tune-split images for `static`")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    meta = json.loads((args.package / "package.json").read_text())
    items, _, _ = load_set(OUT_DIR)
    pixels = gallery_pixels(items, args.data, meta["preprocessing"]["image"]["color_mode"])
    tune = pixels[[i for i, it in enumerate(items) if it["split"] == "tune"][: args.calibration]]
    held = pixels[[i for i, it in enumerate(items) if it["split"] == "heldout"]]
    source = args.package / meta["towers"]["image"]["file"]
    fp32 = session(source, 1)
    reference = vectors(fp32, held)
    report: dict = {"held_out_images": len(held), "fp32_images_per_s": round(images_per_s(fp32, held), 1)}
    candidates: dict[str, Callable[[Path], None]] = {
        "dynamic": lambda out: quantize_dynamic(
            source,
            out,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
            weight_type=QuantType.QInt8,
        ),  # fmt: skip
        "static": lambda out: quantize_static(
            source,
            out,
            _Images(tune),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        ),  # fmt: skip
    }
    with tempfile.TemporaryDirectory(prefix="photo-int8-") as tmp:
        for name, build in candidates.items():
            path = Path(tmp) / f"{name}.onnx"
            build(path)
            model = session(path, 1)
            got = vectors(model, held)
            entry: dict = {"size_kib": path.stat().st_size // 1024}
            for vec, ref in reference.items():
                norms = np.linalg.norm(got[vec], axis=1) * np.linalg.norm(ref, axis=1)
                cos = np.sum(got[vec] * ref, axis=1) / norms
                entry[f"{vec}_cosine_min"] = round(float(cos.min()), 4)
                entry[f"{vec}_cosine_mean"] = round(float(cos.mean()), 5)
            entry["images_per_s"] = round(images_per_s(model, held), 1)
            entry["meets_bar"] = min(entry["semantic_cosine_min"], entry["visual_cosine_min"]) >= BAR
            report[name] = entry
            print(f"{name}: {json.dumps(entry)}", flush=True)
    print(f"fp32: {report['fp32_images_per_s']} images/s (one thread, batch 8); bar: cosine >= {BAR}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
