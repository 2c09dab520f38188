"""tools/photo_package/tune_conse.py: its numpy ConSE must be the graph's own computation, or the knobs it
picks on the tune split would not be the ones a rebuilt package ships (docs/notes/backbone_study.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from services.encoder.package import ModelPackage
from services.encoder.preprocess import decode_image
from tools.photo_package.tune_conse import conse, with_logits

SUBSET_IMAGES = Path(__file__).resolve().parent / "fixtures" / "photo_recall" / "images"


def _run(path: Path, outputs: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]).run(outputs, feed)


def test_numpy_conse_reproduces_the_shipped_image_graph(photo_package: ModelPackage, tmp_path: Path) -> None:
    root = photo_package.directory
    files = sorted(p for p in SUBSET_IMAGES.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:6]
    assert files, f"no images in {SUBSET_IMAGES}"
    pixels = np.stack([decode_image(p.read_bytes(), 224, 200_000_000, "rgb_on_white") for p in files])
    noise = np.random.default_rng(3).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    pixels = np.concatenate([pixels, noise])

    path, labels, name = with_logits(root / "image.onnx", tmp_path / "image.onnx")
    semantic, logits = _run(path, ["semantic", name], {"pixels": pixels})
    assert labels.shape == (1000, 384) and logits.shape == (len(pixels), 1000)
    # the shipped setting (package.json: top_t 20, temperature 1.5, since 0.2.0) is what the graph computes
    shipped = json.loads((root / "package.json").read_text())["towers"]["image"]["conse"]
    assert (shipped["top_t"], shipped["softmax_temperature"]) == (20, 1.5)
    assert np.abs(conse(logits, labels, 20, 1.5) - semantic).max() < 1e-5
    # and the knobs matter: another setting (0.1.0's top-T 5, temperature 1) gives other vectors
    assert np.abs(conse(logits, labels, 5, 1.0) - semantic).max() > 1e-3
    assert np.allclose(np.linalg.norm(conse(logits, labels, 5, 1.0), axis=1), 1.0, atol=1e-5)


def test_logits_are_taken_before_a_temperature_division(tmp_path: Path) -> None:
    """A package built with --temperature divides the logits before its Softmax: the tuner must read the
    undivided logits, else it would apply the temperature twice."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6)).astype(np.float32)
    labels = rng.standard_normal((6, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["fc_out"]),
            helper.make_node("Div", ["fc_out", "temperature"], ["scaled"]),
            helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
            helper.make_node("MatMul", ["p", "labels"], ["semantic"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("semantic", TensorProto.FLOAT, [None, 3])],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "temperature"),
            numpy_helper.from_array(labels, "labels"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "tiny.onnx"))

    path, got_labels, name = with_logits(tmp_path / "tiny.onnx", tmp_path / "with_logits.onnx")
    x = rng.standard_normal((5, 4)).astype(np.float32)
    (logits,) = _run(path, [name], {"x": x})
    assert name == "fc_out"
    assert np.allclose(logits, x @ w, atol=1e-5)
    assert np.array_equal(got_labels, labels)
