"""The embedded runtime (ONNX Runtime in-process) on the model packages' own files: the demo package (its
towers are the Triton model repository's ONNX files) and the photo package (two image vectors, a
WordPiece text tower with an attention mask)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from services.common.errors import DeadlineExceeded, FailedPrecondition
from services.encoder.backends import make_backend, package_from_settings
from services.encoder.backends.onnxruntime import OnnxRuntimeBackend, merge_feeds
from services.encoder.package import ModelPackage, load_package
from services.encoder.settings import REPO_ROOT, EncoderSettings
from services.encoder.tokenizer import WordPieceTokenizer


def demo_package(model_repository: Path) -> ModelPackage:
    return load_package("demo", REPO_ROOT / "models", model_repository)


@pytest.fixture
async def backend(model_repository: Path) -> OnnxRuntimeBackend:
    runtime = OnnxRuntimeBackend(
        demo_package(model_repository), intra_op_threads=2, max_batch=16, allow_spinning=False
    )
    yield runtime  # type: ignore[misc]
    await runtime.close()


def _reference(path: Path, name: str, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: batch})[0]


async def test_describes_the_towers_from_package_and_graph(backend: OnnxRuntimeBackend) -> None:
    image, text = await backend.describe()
    assert (image.model, image.version) == ("clip_image", "1")
    assert [(t.name, t.dtype, t.shape) for t in image.inputs] == [("pixels", "uint8", (224, 224, 3))]
    assert [(t.name, t.dtype, t.shape) for t in text.inputs] == [("input_ids", "int64", (77,))]
    assert image.outputs[0].shape == text.outputs[0].shape == (256,)  # from the ONNX graph


async def test_concurrent_calls_are_merged_into_batches(
    backend: OnnxRuntimeBackend, model_repository: Path
) -> None:
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (24, 224, 224, 3), dtype=np.uint8)
    image, _ = await backend.describe()
    tower = backend._towers[0]  # type: ignore[index]
    runs: list[int] = []
    real_run = tower._run

    def counting_run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        runs.append(len(feed["pixels"]))
        return real_run(feed)

    tower._run = counting_run  # type: ignore[method-assign]
    outs = await asyncio.gather(*(backend.encode_images(rows[i : i + 1], 30.0) for i in range(24)))
    assert sum(runs) == 24 and len(runs) < 24 and max(runs) <= 16  # merged, capped at max_batch
    merged = np.concatenate([o["embedding"] for o in outs])
    expected = _reference(model_repository / "clip_image" / "1" / "model.onnx", "pixels", rows)
    assert np.abs(merged - expected).max() <= 1e-5


async def test_large_batches_are_split_at_max_batch(backend: OnnxRuntimeBackend) -> None:
    ids = np.zeros((40, 77), dtype=np.int64)
    ids[:, 0], ids[:, 1], ids[:, 2] = 49406, np.arange(40) + 320, 49407
    out = (await backend.encode_texts({"input_ids": ids}, 30.0))["embedding"]
    assert out.shape[0] == 40 and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


async def test_deadline_expires_while_queued(backend: OnnxRuntimeBackend) -> None:
    await backend.describe()
    busy = np.zeros((16, 224, 224, 3), dtype=np.uint8)
    first = asyncio.create_task(backend.encode_images(busy, 30.0))
    await asyncio.sleep(0)
    with pytest.raises(DeadlineExceeded):
        await backend.encode_images(busy[:1], 0.001)
    await first


async def test_missing_onnx_file_is_a_clear_startup_error(model_repository: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(model_repository / "clip_text", repo / "clip_text")
    (repo / "clip_image" / "1").mkdir(parents=True)
    runtime = OnnxRuntimeBackend(demo_package(repo), intra_op_threads=1, max_batch=8, allow_spinning=False)
    with pytest.raises(
        FailedPrecondition, match=r"the image tower's ONNX file .*clip_image/1/model.onnx does not"
    ):
        await runtime.start()


async def test_int8_variant_is_selected_by_settings(model_repository: Path) -> None:
    settings = EncoderSettings(model_package="demo", model_repository=model_repository, image_variant="int8")
    runtime = make_backend(settings, package_from_settings(settings))
    try:
        image, _ = await runtime.describe()
        assert image.model == "clip_image_int8"
        graph = onnx.load(str(model_repository / "clip_image_int8" / "1" / "model.onnx")).graph
        weights = {init.name for init in graph.initializer}
        ops = [node.op_type for node in graph.node]
        assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
        # Every matrix multiply by a weight is int8; activation x activation (attention) stays fp32.
        assert not [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    finally:
        await runtime.close()


def test_token_feeds_of_different_lengths_merge_with_zero_padding() -> None:
    short = {"input_ids": np.array([[101, 7, 102]]), "attention_mask": np.array([[1, 1, 1]])}
    long = {"input_ids": np.array([[101, 7, 8, 9, 102]]), "attention_mask": np.array([[1, 1, 1, 1, 1]])}
    merged = merge_feeds([short, long])
    assert merged["input_ids"].tolist() == [[101, 7, 102, 0, 0], [101, 7, 8, 9, 102]]
    assert merged["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]


async def test_photo_package_serves_two_image_vectors_and_padding_free_text(
    photo_package: ModelPackage,
) -> None:
    runtime = OnnxRuntimeBackend(photo_package, intra_op_threads=2, max_batch=16, allow_spinning=False)
    try:
        image, text = await runtime.describe()
        assert [(t.name, t.shape) for t in image.outputs] == [("semantic", (384,)), ("visual", (1280,))]
        assert [t.name for t in text.inputs] == ["input_ids", "attention_mask"]
        tokenizer = WordPieceTokenizer(photo_package.directory / "tokenizer.json", 256)
        texts = ["a dog on a beach", "jellyfish", "an old man playing chess in a park at dusk"]
        alone = [(await runtime.encode_texts(tokenizer([t]).tensors(), 30.0))["embedding"][0] for t in texts]
        together = (await runtime.encode_texts(tokenizer(texts).tensors(), 30.0))["embedding"]
        # Padding to the batch's longest text does not move a vector (the pooling reads the mask).
        assert np.abs(np.stack(alone) - together).max() < 1e-5
        pixels = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
        out = await runtime.encode_images(pixels, 30.0)
        assert out["semantic"].shape == (3, 384) and out["visual"].shape == (3, 1280)
    finally:
        await runtime.close()


def test_settings_read_the_stacks_triton_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESEARCH_TRITON_GRPC_URL", "127.0.0.1:1234")
    assert EncoderSettings().triton_grpc_url == "127.0.0.1:1234"
    monkeypatch.setenv("IMAGESEARCH_ENCODER_TRITON_GRPC_URL", "127.0.0.1:5678")
    assert EncoderSettings().triton_grpc_url == "127.0.0.1:5678"
