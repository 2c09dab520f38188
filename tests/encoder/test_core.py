"""The encoder's domain logic with a plain fake runtime: per-item failures, batch limits, normalisation,
deadlines, streaming and the model contract checks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from services.common import context
from services.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Unavailable
from services.encoder.backends.base import TensorSpec, TowerSpec
from services.encoder.core import Encoder, build_model_info
from services.encoder.domain import ImageItem, Limits, TextItem
from services.encoder.package import ModelPackage, PackageManifest, load_package
from tests.encoder import parity_images


def manifest(**changes: object) -> dict[str, Any]:
    """A two-vector package (a shared 4-d `semantic`, an image-only 3-d `visual`) for the fake runtime."""
    raw: dict[str, Any] = {
        "format": "imagesearch-model-package/1",
        "name": "m",
        "version": "3",
        "vectors": {
            "semantic": {"dim": 4, "towers": ["image", "text"]},
            "visual": {"dim": 3, "towers": ["image"]},
        },
        "towers": {
            "image": {
                "file": "image.onnx",
                "inputs": [{"name": "pixels", "dtype": "UINT8", "shape": [-1, 224, 224, 3]}],
                "outputs": [
                    {"name": "semantic", "dtype": "FP32", "shape": [-1, 4], "vector": "semantic"},
                    {"name": "visual", "dtype": "FP32", "shape": [-1, 3], "vector": "visual"},
                ],
            },
            "text": {
                "file": "text.onnx",
                "inputs": [{"name": "input_ids", "dtype": "INT64", "shape": [-1, 77]}],
                "outputs": [{"name": "embedding", "dtype": "FP32", "shape": [-1, 4], "vector": "semantic"}],
            },
        },
        "tokenizer": {"kind": "clip-bpe", "max_length": 77},
        "preprocessing": {
            "image": {
                "size": 224,
                "resize_mode": "shortest_side_center_crop",
                "interpolation": "bicubic",
                "color_mode": "rgb_on_white",
            }
        },
    }
    raw.update(changes)
    return raw


def package(**changes: object) -> ModelPackage:
    return ModelPackage(Path("."), PackageManifest.model_validate(manifest(**changes)), Path("."))


PACKAGE = package()


def _towers(**image_changes: object) -> tuple[TowerSpec, TowerSpec]:
    image = TowerSpec(
        "img",
        "3",
        (TensorSpec("pixels", "uint8", (224, 224, 3)),),
        (TensorSpec("semantic", "float32", (4,)), TensorSpec("visual", "float32", (3,))),
        32,
    )
    text = TowerSpec(
        "txt",
        "3",
        (TensorSpec("input_ids", "int64", (77,)),),
        (TensorSpec("embedding", "float32", (4,)),),
        64,
    )
    return replace(image, **image_changes), text  # type: ignore[arg-type]


class FakeRuntime:
    """Returns un-normalised vectors derived from the input, so results can be traced to items."""

    runtime = "fake"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[str, int, float]] = []
        self.nan_rows: set[int] = set()
        self.fail: Exception | None = None
        self.is_ready = True
        self.describes = 0

    async def describe(self) -> tuple[TowerSpec, TowerSpec]:
        self.describes += 1
        return _towers()

    async def _run(self, kind: str, rows: np.ndarray, timeout_s: float) -> np.ndarray:
        """[n, 4] per row; the image tower's `visual` is its first three columns."""
        self.calls.append((kind, len(rows), timeout_s))
        if self.fail is not None:
            raise self.fail
        await asyncio.sleep(self.delay_s)
        flat = rows.reshape(len(rows), -1).astype(np.float32)
        out = (
            np.stack([flat.mean(1) + 1, flat.std(1) + 1, flat[:, 0] + 1, np.full(len(rows), 2.0)], axis=1) * 3
        )
        for i in self.nan_rows:
            if i < len(out):
                out[i, 0] = np.nan
        return out.astype(np.float32)

    async def encode_images(self, pixels: np.ndarray, timeout_s: float) -> dict[str, np.ndarray]:
        out = await self._run("image", pixels, timeout_s)
        return {"semantic": out, "visual": out[:, :3]}

    async def encode_texts(self, inputs: Mapping[str, np.ndarray], timeout_s: float) -> dict[str, np.ndarray]:
        return {"embedding": await self._run("text", inputs["input_ids"], timeout_s)}

    async def ready(self) -> bool:
        return self.is_ready

    async def close(self) -> None:
        pass


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def encoder(runtime: FakeRuntime) -> Encoder:
    return Encoder(
        runtime,
        PACKAGE,
        Limits(max_batch_images=4, max_batch_texts=5, max_image_bytes=200_000, max_text_chars=50),
    )


JPEG = parity_images.case_bytes("rgb_jpeg")
PNG = parity_images.case_bytes("tiny_3x2_png")


async def test_bad_images_fail_only_themselves(encoder: Encoder, runtime: FakeRuntime) -> None:
    model, results = await encoder.encode_images(
        [ImageItem("a", JPEG), ImageItem("", b""), ImageItem("c", b"\x89PNG broken"), ImageItem("", PNG)]
    )
    assert (model.name, model.version) == ("m", "3")
    assert [r.id for r in results] == ["a", "1", "c", "3"]  # request order; default id = index
    assert [r.error.code if r.error else None for r in results] == [
        None,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.INVALID_ARGUMENT,
        None,
    ]
    assert runtime.calls[0][:2] == ("image", 2)  # only the decodable ones reach the runtime
    for r in (results[0], results[3]):
        assert r.embedding is not None and r.embedding.dtype == np.float32
        assert abs(float(np.linalg.norm(r.embedding)) - 1) < 1e-6  # re-normalised


async def test_oversized_image_bytes_are_resource_exhausted(encoder: Encoder) -> None:
    big = JPEG + b"\x00" * 200_000
    _, (result,) = await encoder.encode_images([ImageItem("x", big)])
    assert result.error is not None and result.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "above the 200000-byte limit" in result.error.message


async def test_batch_limits(encoder: Encoder) -> None:
    with pytest.raises(InvalidArgument, match="no images"):
        await encoder.encode_images([])
    with pytest.raises(Exception, match="5 images in one call, above the limit of 4") as info:
        await encoder.encode_images([ImageItem("", PNG)] * 5)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match="no texts"):
        await encoder.encode_texts([])
    with pytest.raises(Exception, match="6 texts in one call") as info:
        await encoder.encode_texts([TextItem("", "x")] * 6)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


async def test_texts_per_item_errors_and_truncation(encoder: Encoder, runtime: FakeRuntime) -> None:
    _, results = await encoder.encode_texts(
        [
            TextItem("ok", "a photo of a cat"),
            TextItem("", ""),
            TextItem("", " \t\n "),
            TextItem("", "x" * 51),
            TextItem("long", "cat " * 12),
        ]
    )
    codes = [r.error.code if r.error else None for r in results]
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert codes == [None, invalid, invalid, invalid, None]
    assert (
        "empty" in results[1].error.message
        and "after Unicode and whitespace cleanup" in results[2].error.message
    )  # type: ignore[union-attr]
    assert "51 characters, above the limit of 50" in results[3].error.message  # type: ignore[union-attr]
    assert [r.truncated for r in results] == [False] * 5  # 12 words fit in 77 tokens
    assert runtime.calls == [("text", 2, 30.0)]


async def test_overlong_text_is_truncated_and_flagged(runtime: FakeRuntime) -> None:
    encoder = Encoder(runtime, PACKAGE, Limits(max_text_chars=2000))
    _, (result,) = await encoder.encode_texts([TextItem("", "cat " * 100)])
    assert result.error is None and result.truncated


async def test_a_non_finite_vector_fails_its_item_only(encoder: Encoder, runtime: FakeRuntime) -> None:
    runtime.nan_rows = {1}
    _, results = await encoder.encode_texts([TextItem("", "a"), TextItem("", "b"), TextItem("", "c")])
    assert [r.error.code if r.error else None for r in results] == [None, grpc.StatusCode.INTERNAL, None]


async def test_runtime_failures_fail_the_whole_call(encoder: Encoder, runtime: FakeRuntime) -> None:
    runtime.fail = Unavailable("Triton is down")
    with pytest.raises(Unavailable, match="Triton is down"):
        await encoder.encode_images([ImageItem("", PNG)])
    with pytest.raises(Unavailable):
        await encoder.encode_texts([TextItem("", "a")])


async def test_the_callers_deadline_bounds_the_runtime_call(encoder: Encoder, runtime: FakeRuntime) -> None:
    token = context.set_deadline(0.5)
    try:
        await encoder.encode_texts([TextItem("", "a")])
    finally:
        context.reset_deadline(token)
    assert 0 < runtime.calls[-1][2] <= 0.5
    token = context.set_deadline(-1)
    try:
        with pytest.raises(DeadlineExceeded):
            await encoder.encode_texts([TextItem("", "a")])
    finally:
        context.reset_deadline(token)


async def test_stream_yields_every_result_with_bounded_read_ahead() -> None:
    runtime = FakeRuntime(delay_s=0.01)
    encoder = Encoder(runtime, PACKAGE, Limits(stream_max_in_flight=3))
    pulled = 0
    completed: list[str] = []
    max_ahead = 0

    async def items() -> AsyncIterator[ImageItem]:
        nonlocal pulled, max_ahead
        for i in range(12):
            pulled += 1
            max_ahead = max(max_ahead, pulled - len(completed))
            yield ImageItem("" if i % 2 else f"id{i}", b"" if i == 5 else PNG)

    async for model, result in encoder.encode_image_stream(items()):
        assert model.name == "m"
        completed.append(result.id)
    assert sorted(completed) == sorted([f"id{i}" if i % 2 == 0 else str(i) for i in range(12)])
    assert max_ahead <= 3 + 1  # the in-flight limit (+ the one waiting for a slot)


async def test_stream_fails_as_a_whole_when_the_runtime_is_down(runtime: FakeRuntime) -> None:
    runtime.fail = Unavailable("down")
    encoder = Encoder(runtime, PACKAGE)

    async def items() -> AsyncIterator[ImageItem]:
        for _ in range(5):
            yield ImageItem("", PNG)

    with pytest.raises(Unavailable):
        async for _ in encoder.encode_image_stream(items()):
            pass
    await encoder.close()  # batches already started finish; nothing is left pending


async def test_model_is_described_again_after_the_runtime_was_not_ready(
    encoder: Encoder, runtime: FakeRuntime
) -> None:
    await encoder.model_info()
    assert runtime.describes == 1
    runtime.is_ready = False
    assert not await encoder.ready()
    runtime.is_ready = True
    assert await encoder.ready()
    assert runtime.describes == 2


@pytest.mark.parametrize(
    ("image_changes", "fragment"),
    [
        ({"version": "4"}, "serves version 4"),
        ({"outputs": (TensorSpec("semantic", "float32", (8,)),)}, "output 'semantic' is 8 wide"),
        ({"inputs": (TensorSpec("pixels", "uint8", (256, 256, 3)),)}, "needs 'pixels' uint8 [224, 224, 3]"),
        ({"inputs": (TensorSpec("image", "uint8", (224, 224, 3)),)}, "needs 'pixels'"),
    ],
)
def test_served_towers_that_differ_from_the_package_are_refused(
    image_changes: dict[str, object], fragment: str
) -> None:
    image, text = _towers(**image_changes)
    with pytest.raises(FailedPrecondition) as info:
        build_model_info(PACKAGE, image, text, "fake")
    assert fragment in info.value.message


def test_contract_and_vectors_are_read_from_the_package() -> None:
    info = build_model_info(PACKAGE, *_towers(), "fake")
    assert info.image.color_mode == "rgb_on_white" and info.image.size == 224
    assert info.image.mean == (0.48145466, 0.4578275, 0.40821073)  # default when not declared
    assert info.text.tokenizer == "clip-bpe-49408" and info.text.context_length == 77
    assert info.dimension == 4 and (info.model.name, info.model.version) == ("m", "3")
    assert [(v.name, v.dimension, v.from_image, v.from_text, v.primary) for v in info.vectors] == [
        ("semantic", 4, True, True, True),
        ("visual", 3, True, False, False),
    ]


async def test_images_get_every_named_vector_and_texts_the_shared_one(runtime: FakeRuntime) -> None:
    encoder = Encoder(runtime, PACKAGE)
    _, images = await encoder.encode_images([ImageItem("a", parity_images.case_bytes("rgb_landscape_png"))])
    _, texts = await encoder.encode_texts([TextItem("t", "a cat")])
    (image,), (text,) = images, texts
    assert sorted(image.vectors) == ["semantic", "visual"] and list(text.vectors) == ["semantic"]
    assert image.embedding is image.vectors["semantic"] and image.vectors["visual"].shape == (3,)
    for vector in (*image.vectors.values(), *text.vectors.values()):
        assert abs(float(np.linalg.norm(vector)) - 1) < 1e-6
    await encoder.close()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"format": "other/1"}, "format must be"),
        (
            {
                "vectors": {
                    "semantic": {"dim": 4, "towers": ["image"]},
                    "visual": {"dim": 3, "towers": ["image"]},
                }
            },
            "vectors.semantic.towers does not list 'text'",
        ),
        ({"tokenizer": {"kind": "sentencepiece", "max_length": 77}}, "tokenizer.kind"),
        ({"tokenizer": {"kind": "wordpiece", "max_length": 77}}, "tokenizer.file"),
    ],
)
def test_a_package_we_cannot_serve_is_refused_by_field(
    changes: dict[str, object], fragment: str, tmp_path: Path
) -> None:
    (tmp_path / "package.json").write_text(json.dumps(manifest(**changes)))
    with pytest.raises(FailedPrecondition) as info:
        load_package(str(tmp_path), tmp_path, tmp_path)
    assert fragment in info.value.message


def test_packages_are_found_by_name_or_directory(tmp_path: Path) -> None:
    from services.encoder.settings import REPO_ROOT

    demo = load_package("demo", REPO_ROOT / "models", REPO_ROOT / "triton_models", variant="int8")
    assert demo.tower("image").file == REPO_ROOT / "triton_models" / "clip_image_int8" / "1" / "model.onnx"
    assert demo.primary_vector == "semantic"
    with pytest.raises(FailedPrecondition) as info:
        load_package("nope", REPO_ROOT / "models", tmp_path)
    assert "'nope' not found" in info.value.message and "demo" in info.value.message
