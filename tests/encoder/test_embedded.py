"""The embedded runtime (ONNX Runtime in-process) on the model repository's own files and configs."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from services.common.errors import DeadlineExceeded, FailedPrecondition
from services.encoder.backends import image_model_name, make_backend
from services.encoder.backends.onnxruntime import OnnxRuntimeBackend
from services.encoder.settings import EncoderSettings


@pytest.fixture
async def backend(model_repository: Path) -> OnnxRuntimeBackend:
    runtime = OnnxRuntimeBackend(
        model_repository, "clip_image", "clip_text", intra_op_threads=2, max_batch=16, allow_spinning=False
    )
    yield runtime  # type: ignore[misc]
    await runtime.close()


def _reference(path: Path, name: str, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: batch})[0]


async def test_describes_the_towers_from_config_and_graph(backend: OnnxRuntimeBackend) -> None:
    image, text = await backend.describe()
    assert (image.model, image.version, image.input_name, image.input_dtype) == (
        "clip_image",
        "1",
        "pixels",
        "uint8",
    )
    assert image.input_shape == (224, 224, 3) and text.input_shape == (77,)
    assert image.dimension == text.dimension > 0  # from the ONNX graph
    assert image.parameters["imagesearch.image.color_mode"] == "rgb_on_white"
    assert image.max_batch_size == 32 and text.max_batch_size == 64


async def test_concurrent_calls_are_merged_into_batches(
    backend: OnnxRuntimeBackend, model_repository: Path
) -> None:
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (24, 224, 224, 3), dtype=np.uint8)
    image, _ = await backend.describe()
    tower = backend._towers[0]  # type: ignore[index]
    runs: list[int] = []
    real_run = tower._run

    def counting_run(batch: np.ndarray) -> np.ndarray:
        runs.append(len(batch))
        return real_run(batch)

    tower._run = counting_run  # type: ignore[method-assign]
    outs = await asyncio.gather(*(backend.encode_images(rows[i : i + 1], 30.0) for i in range(24)))
    assert sum(runs) == 24 and len(runs) < 24 and max(runs) <= 16  # merged, capped at max_batch
    merged = np.concatenate(outs)
    expected = _reference(model_repository / "clip_image" / "1" / "model.onnx", "pixels", rows)
    assert np.abs(merged - expected).max() <= 1e-5


async def test_large_batches_are_split_at_max_batch(backend: OnnxRuntimeBackend) -> None:
    ids = np.zeros((40, 77), dtype=np.int64)
    ids[:, 0], ids[:, 1], ids[:, 2] = 49406, np.arange(40) + 320, 49407
    out = await backend.encode_texts(ids, 30.0)
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
    shutil.copy2(model_repository / "clip_image" / "config.pbtxt", repo / "clip_image" / "config.pbtxt")
    runtime = OnnxRuntimeBackend(
        repo, "clip_image", "clip_text", intra_op_threads=1, max_batch=8, allow_spinning=False
    )
    with pytest.raises(FailedPrecondition, match=r"no version of model 'clip_image' has model.onnx"):
        await runtime.start()


async def test_int8_variant_is_selected_by_settings(model_repository: Path) -> None:
    settings = EncoderSettings(model_repository=model_repository, image_variant="int8")
    assert image_model_name(settings) == "clip_image_int8"
    runtime = make_backend(settings)
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


def test_settings_read_the_stacks_triton_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGESEARCH_TRITON_GRPC_URL", "127.0.0.1:1234")
    assert EncoderSettings().triton_grpc_url == "127.0.0.1:1234"
    monkeypatch.setenv("IMAGESEARCH_ENCODER_TRITON_GRPC_URL", "127.0.0.1:5678")
    assert EncoderSettings().triton_grpc_url == "127.0.0.1:5678"
