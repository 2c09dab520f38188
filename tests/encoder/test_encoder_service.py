"""The encoder service as a real process, on both runtimes: ONNX Runtime in-process (the embedded default)
and a real Triton. Same answers from both, a precise status for every bad input, per item inside a batch,
UNAVAILABLE when Triton is down, and deadlines that reach Triton."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as tritonclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from PIL import Image

from devstack import Stack, StackInfo
from services.common.errors import status_number
from services.encoder.package import ModelPackage
from tests.encoder import parity_images
from tests.encoder.conftest import demo_model_present
from tests.service_process import ServiceProcess, free_port

pytestmark = pytest.mark.integration

LIMITS = {
    "IMAGESEARCH_ENCODER_MAX_BATCH_IMAGES": "40",
    "IMAGESEARCH_ENCODER_MAX_BATCH_TEXTS": "50",
    "IMAGESEARCH_ENCODER_MAX_TEXT_CHARS": "500",
    "IMAGESEARCH_ENCODER_MAX_IMAGE_PIXELS": "40000000",
    "IMAGESEARCH_ENCODER_MAX_MESSAGE_BYTES": str(8 * 1024 * 1024),
    "IMAGESEARCH_ENCODER_HEALTH_INTERVAL_S": "0.2",
    "IMAGESEARCH_ENCODER_LOG_LEVEL": "info",
    # The service's behaviour is tested on the clip-art package: its image tower is ~8x faster on CPU and
    # it runs on the stand-in towers where the demo model is absent. The photo package (the default)
    # has its own tests at the end of this module.
    "IMAGESEARCH_ENCODER_MODEL_PACKAGE": "demo",
}
INVALID = status_number(grpc.StatusCode.INVALID_ARGUMENT)
EXHAUSTED = status_number(grpc.StatusCode.RESOURCE_EXHAUSTED)


def _service(env: dict[str, str]) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    svc = ServiceProcess("services.encoder", env={**LIMITS, **env}).start(timeout_s=120)
    try:
        with grpc.insecure_channel(
            svc.address, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        ) as channel:
            yield encoder_pb2_grpc.EncoderServiceStub(channel)
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def embedded(model_repository: Path) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    yield from _service({"IMAGESEARCH_ENCODER_MODEL_REPOSITORY": str(model_repository)})


@pytest.fixture(scope="module")
def via_triton(triton: StackInfo) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    yield from _service(
        {
            "IMAGESEARCH_ENCODER_BACKEND": "triton",
            "IMAGESEARCH_ENCODER_TRITON_GRPC_URL": str(triton.triton_grpc_url),
        }
    )


@pytest.fixture(params=["embedded", "via_triton"])
def encoder(request: pytest.FixtureRequest) -> encoder_pb2_grpc.EncoderServiceStub:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def _vectors(results: list[encoder_pb2.EncodeResult]) -> np.ndarray:
    return np.stack([np.frombuffer(r.embedding.values, dtype="<f4") for r in results])


def _images(names: list[str]) -> list[encoder_pb2.ImageInput]:
    return [encoder_pb2.ImageInput(id=n, data=parity_images.case_bytes(n)) for n in names]


TEXTS = [
    "a photo of a cat",
    "A RED vintage car, parked by the sea!",
    "日本の国旗",
    "emoji 🐱🚗",
    "&amp; html &lt;entities&gt;",
    "word " * 90,  # truncated
]


def test_triton_and_embedded_give_the_same_embeddings(
    embedded: encoder_pb2_grpc.EncoderServiceStub, via_triton: encoder_pb2_grpc.EncoderServiceStub
) -> None:
    names = sorted(parity_images.CASES)
    for start in range(0, len(names), 8):  # below the 8 MiB message limit
        request = encoder_pb2.EncodeImagesRequest(images=_images(names[start : start + 8]))
        a, b = embedded.EncodeImages(request, timeout=120), via_triton.EncodeImages(request, timeout=120)
        assert a.model == b.model and a.model.name and a.model.version
        assert all(r.HasField("embedding") for r in [*a.results, *b.results])
        assert np.abs(_vectors(list(a.results)) - _vectors(list(b.results))).max() <= 1e-5

    texts = encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text=t) for t in TEXTS])
    a_t, b_t = embedded.EncodeTexts(texts, timeout=60), via_triton.EncodeTexts(texts, timeout=60)
    assert np.abs(_vectors(a_t.results) - _vectors(b_t.results)).max() <= 1e-5
    assert [r.truncated for r in a_t.results] == [False] * 5 + [True] == [r.truncated for r in b_t.results]


def test_embeddings_are_unit_float32_with_the_model_on_every_response(
    encoder: encoder_pb2_grpc.EncoderServiceStub,
) -> None:
    info = encoder.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=30)
    response = encoder.EncodeImages(
        encoder_pb2.EncodeImagesRequest(images=_images(["rgb_jpeg", "palette_gif"]))
    )
    assert response.model == info.model
    for r in response.results:
        assert r.embedding.model == info.model
        v = np.frombuffer(r.embedding.values, dtype="<f4")
        assert v.shape == (info.dimension,) and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    texts = encoder.EncodeTexts(
        encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(id="q", text="a cat")])
    )
    assert texts.model == info.model and texts.results[0].id == "q"
    assert len(texts.results[0].embedding.values) == 4 * info.dimension


def test_model_info_reports_the_contract(encoder: encoder_pb2_grpc.EncoderServiceStub) -> None:
    info = encoder.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=30)
    assert info.model.name == "imagesearch-demo-clip" and info.model.version == "1"
    assert info.dimension > 0 and info.runtime in ("onnxruntime", "triton")
    pre = info.image_preprocessing
    assert (pre.size, pre.resize_mode, pre.interpolation) == (
        224,
        encoder_pb2.RESIZE_MODE_SHORTEST_SIDE_CENTER_CROP,
        "bicubic",
    )
    assert list(pre.mean) == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert list(pre.std) == pytest.approx([0.26862954, 0.26130258, 0.27577711])
    assert pre.color_conversion.startswith("rgb_on_white:")
    text = info.text_preprocessing
    assert (text.tokenizer, text.context_length, text.lowercase, text.max_text_chars) == (
        "clip-bpe-49408",
        77,
        True,
        500,
    )
    assert (info.max_batch_images, info.max_batch_texts, info.max_image_pixels) == (40, 50, 40_000_000)


def _bomb_png() -> bytes:
    from tests.encoder.test_preprocess import _bomb_png as bomb

    return bomb()


def test_bad_images_fail_per_item(encoder: encoder_pb2_grpc.EncoderServiceStub) -> None:
    from tests.encoder.test_preprocess import _png_header_only

    jpeg = parity_images.case_bytes("rgb_jpeg")
    items = [
        ("good", jpeg),
        ("zero-bytes", b""),
        ("corrupt", jpeg[: len(jpeg) // 2]),
        ("garbage", b"definitely not an image"),
        ("pdf", b"%PDF-1.7\n..."),
        ("bomb", _bomb_png()),
        ("huge-dimensions", _png_header_only(60_000, 60_000)),
        ("animated", parity_images.case_bytes("animated_gif")),
        ("good-too", parity_images.case_bytes("tiny_1x1_png")),
    ]
    response = encoder.EncodeImages(
        encoder_pb2.EncodeImagesRequest(images=[encoder_pb2.ImageInput(id=i, data=d) for i, d in items]),
        timeout=60,
    )
    outcome = {
        r.id: (r.error.code, r.error.message) if r.HasField("error") else "ok" for r in response.results
    }
    assert [r.id for r in response.results] == [i for i, _ in items]
    assert outcome["good"] == outcome["good-too"] == outcome["animated"] == "ok"
    assert outcome["zero-bytes"] == (INVALID, "image data is empty (0 bytes)")
    assert outcome["corrupt"][0] == INVALID and "corrupt or truncated" in outcome["corrupt"][1]
    assert (
        outcome["garbage"][0] == INVALID
        and "unsupported or unrecognised image format" in outcome["garbage"][1]
    )
    assert outcome["pdf"][0] == INVALID and "looks like PDF" in outcome["pdf"][1]
    assert outcome["bomb"][0] == EXHAUSTED and "10000x10000 = 100000000 pixels" in outcome["bomb"][1]
    assert outcome["huge-dimensions"][0] == EXHAUSTED and "-pixel cap" in outcome["huge-dimensions"][1]


def test_animated_image_is_encoded_as_its_first_frame(encoder: encoder_pb2_grpc.EncoderServiceStub) -> None:
    animated = parity_images.case_bytes("animated_gif")
    first = Image.open(io.BytesIO(animated))
    first.load()
    still = io.BytesIO()
    first.save(still, "PNG")
    second = Image.open(io.BytesIO(animated))
    second.seek(1)
    other = io.BytesIO()
    second.convert("RGB").save(other, "PNG")
    response = encoder.EncodeImages(
        encoder_pb2.EncodeImagesRequest(
            images=[
                encoder_pb2.ImageInput(data=animated),
                encoder_pb2.ImageInput(data=still.getvalue()),
                encoder_pb2.ImageInput(data=other.getvalue()),
            ]
        )
    )
    v = _vectors(list(response.results))
    assert np.abs(v[0] - v[1]).max() <= 1e-6
    assert np.abs(v[0] - v[2]).max() > 1e-3


def test_bad_texts_fail_per_item(encoder: encoder_pb2_grpc.EncoderServiceStub) -> None:
    texts = [
        ("ok", "a lion"),
        ("empty", ""),
        ("blank", " \n\t "),
        ("overlong", "x" * 501),
        ("long", "lion " * 100),
    ]
    response = encoder.EncodeTexts(
        encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(id=i, text=t) for i, t in texts]),
        timeout=30,
    )
    by_id = {r.id: r for r in response.results}
    assert by_id["ok"].HasField("embedding") and not by_id["ok"].truncated
    assert (by_id["empty"].error.code, by_id["empty"].error.message) == (INVALID, "text is empty")
    assert (
        by_id["blank"].error.code == INVALID
        and "after Unicode and whitespace cleanup" in by_id["blank"].error.message
    )
    assert by_id["overlong"].error.code == INVALID and "501 characters, above the limit of 500" in (
        by_id["overlong"].error.message
    )
    assert by_id["long"].HasField("embedding") and by_id["long"].truncated


def test_too_many_items_and_empty_requests(encoder: encoder_pb2_grpc.EncoderServiceStub) -> None:
    tiny = parity_images.case_bytes("tiny_1x1_png")
    with pytest.raises(grpc.RpcError) as info:
        encoder.EncodeImages(encoder_pb2.EncodeImagesRequest(images=[encoder_pb2.ImageInput(data=tiny)] * 41))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "41 images in one call, above the limit of 40" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        encoder.EncodeTexts(encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text="a")] * 51))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as info:
        encoder.EncodeImages(encoder_pb2.EncodeImagesRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as info:
        encoder.EncodeTexts(encoder_pb2.EncodeTextsRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_message_is_resource_exhausted(encoder: encoder_pb2_grpc.EncoderServiceStub) -> None:
    big = encoder_pb2.ImageInput(data=b"\xff\xd8" + b"\x00" * (9 * 1024 * 1024))  # above the 8 MiB limit
    with pytest.raises(grpc.RpcError) as info:
        encoder.EncodeImages(encoder_pb2.EncodeImagesRequest(images=[big]), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_stream_returns_one_result_per_image(encoder: encoder_pb2_grpc.EncoderServiceStub) -> None:
    names = ["rgb_jpeg", "palette_gif", "tiny_3x2_png", "cmyk_jpeg", "rgba_png"] * 8
    sent: list[encoder_pb2.StreamEncodeImagesRequest] = []
    for i, name in enumerate(names):
        data = b"" if i % 7 == 3 else parity_images.case_bytes(name)
        sent.append(
            encoder_pb2.StreamEncodeImagesRequest(image=encoder_pb2.ImageInput(id=f"{name}-{i}", data=data))
        )
    sent.append(
        encoder_pb2.StreamEncodeImagesRequest(image=encoder_pb2.ImageInput(data=b""))
    )  # no id: its index
    got = {r.result.id: r for r in encoder.StreamEncodeImages(iter(sent), timeout=120)}
    assert set(got) == {s.image.id for s in sent[:-1]} | {str(len(sent) - 1)}
    for i, s in enumerate(sent[:-1]):
        r = got[s.image.id]
        assert r.model.name == "imagesearch-demo-clip"
        if i % 7 == 3:
            assert r.result.error.code == INVALID
        else:
            assert len(r.result.embedding.values) > 0
    batch = encoder.EncodeImages(encoder_pb2.EncodeImagesRequest(images=[sent[0].image]))
    assert np.abs(_vectors([got[sent[0].image.id].result]) - _vectors(list(batch.results))).max() <= 1e-5


def test_triton_down_is_unavailable_and_recovers(
    private_triton: tuple[Stack, StackInfo], embedded: encoder_pb2_grpc.EncoderServiceStub
) -> None:
    manager, info = private_triton
    env = {
        "IMAGESEARCH_ENCODER_BACKEND": "triton",
        "IMAGESEARCH_ENCODER_TRITON_GRPC_URL": str(info.triton_grpc_url),
    }
    svc = ServiceProcess("services.encoder", env={**LIMITS, **env}).start(timeout_s=120)
    try:
        with grpc.insecure_channel(svc.address) as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            texts = encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text="a cat")])
            assert stub.EncodeTexts(texts, timeout=30).results[0].HasField("embedding")

            manager.stop("triton")
            for call in (
                lambda: stub.EncodeTexts(texts, timeout=30),
                lambda: stub.EncodeImages(
                    encoder_pb2.EncodeImagesRequest(images=_images(["rgb_jpeg"])), timeout=30
                ),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "Triton at" in err.value.details()
            _wait_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)

            manager.start("triton")  # same ports: the service reconnects by itself
            _wait_health(health, health_pb2.HealthCheckResponse.SERVING)
            assert stub.EncodeTexts(texts, timeout=30).results[0].HasField("embedding")
    finally:
        svc.stop()


def _wait_health(health: health_pb2_grpc.HealthStub, status: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"health did not become {status} within {timeout_s}s")


def test_deadline_reaches_triton(private_triton: tuple[Stack, StackInfo]) -> None:
    """A call whose deadline passes while Triton is busy fails with DEADLINE_EXCEEDED, and Triton drops the
    request instead of computing it (its statistics count a failure and no extra inference). A Triton of
    this test's own, so that nobody else's requests change its statistics."""
    _, triton = private_triton
    env = {
        "IMAGESEARCH_ENCODER_BACKEND": "triton",
        "IMAGESEARCH_ENCODER_TRITON_GRPC_URL": str(triton.triton_grpc_url),
    }
    services = _service(env)
    via_triton = next(services)

    async def scenario() -> tuple[int, int, int, int]:
        client = tritonclient.InferenceServerClient(str(triton.triton_grpc_url))
        rows = np.zeros((32, 224, 224, 3), np.uint8)

        def busy_request() -> list[tritonclient.InferInput]:
            tensor = tritonclient.InferInput("pixels", list(rows.shape), "UINT8")
            tensor.set_data_from_numpy(rows)
            return [tensor]

        async def settled_statistics() -> Any:
            # Triton may count a request after its response has gone out: read until two reads agree.
            last = None
            for _ in range(50):
                stats = (await client.get_inference_statistics("clip_image")).model_stats[0]
                counts = (stats.inference_count, stats.inference_stats.success.count)
                if last is not None and counts == (last.inference_count, last.inference_stats.success.count):
                    return stats
                last = stats
                await asyncio.sleep(0.2)
            return last

        try:
            before = await settled_statistics()
            start = time.perf_counter()
            await client.infer("clip_image", busy_request())
            per_batch = time.perf_counter() - start
            # Enough work queued ahead to keep Triton's only instance busy for ~3 s, whatever the speed.
            n_busy = min(200, int(3.0 / max(per_batch, 1e-3)) + 2)
            busy = [asyncio.create_task(client.infer("clip_image", busy_request())) for _ in range(n_busy)]
            await asyncio.sleep(0.5)  # every busy request has arrived; the first ones are running
            request = encoder_pb2.EncodeImagesRequest(images=_images(["tiny_1x1_png"]))
            with pytest.raises(grpc.RpcError) as err:
                await asyncio.to_thread(via_triton.EncodeImages, request, timeout=0.3)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.gather(*busy)
            after = await settled_statistics()
        finally:
            await client.close()
        return (
            n_busy + 1,  # and the one that timed a batch
            after.inference_stats.fail.count - before.inference_stats.fail.count,
            after.inference_count - before.inference_count,
            after.inference_stats.success.count - before.inference_stats.success.count,
        )

    try:
        n_busy, failed, inferred, succeeded = asyncio.run(scenario())
    finally:
        services.close()
    assert (failed, succeeded) == (1, n_busy)
    assert inferred == n_busy * 32  # the expired request was never computed


def test_int8_image_tower_is_selectable(
    model_repository: Path, embedded: encoder_pb2_grpc.EncoderServiceStub
) -> None:
    env = {
        "IMAGESEARCH_ENCODER_MODEL_REPOSITORY": str(model_repository),
        "IMAGESEARCH_ENCODER_IMAGE_VARIANT": "int8",
    }
    names = ["rgb_jpeg", "rgb_landscape_png", "palette_png", "cmyk_jpeg", "grayscale_L_png"]
    request = encoder_pb2.EncodeImagesRequest(images=_images(names))
    for stub in _service(env):
        info = stub.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=30)
        assert info.runtime == "onnxruntime (clip_image_int8)"
        assert info.model == embedded.GetModelInfo(encoder_pb2.GetModelInfoRequest()).model  # same space
        int8 = _vectors(list(stub.EncodeImages(request, timeout=60).results))
    fp32 = _vectors(list(embedded.EncodeImages(request, timeout=60).results))
    cosine = np.sum(int8 * fp32, axis=1)
    # The bar on the trained model; random stand-in weights only need to be close.
    bar = 0.999 if demo_model_present() else 0.95
    assert cosine.min() >= bar and np.abs(int8 - fp32).max() > 0  # close, and really another graph


# ---- the photo package (the default) --------------------------------------------------------------------

PHOTO_ENV = {**LIMITS, "IMAGESEARCH_ENCODER_MODEL_PACKAGE": "photo"}


@pytest.fixture(scope="module")
def photo_embedded(photo_package: ModelPackage) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    yield from _service(PHOTO_ENV)


@pytest.fixture(scope="module")
def photo_via_triton(
    photo_package: ModelPackage, triton: StackInfo, model_repository: Path
) -> Iterator[encoder_pb2_grpc.EncoderServiceStub]:
    assert (model_repository / "photo_image").is_dir(), "Triton serves triton_models/ with the photo towers"
    yield from _service(
        {
            **PHOTO_ENV,
            "IMAGESEARCH_ENCODER_BACKEND": "triton",
            "IMAGESEARCH_ENCODER_TRITON_GRPC_URL": str(triton.triton_grpc_url),
        }
    )


def _named(result: encoder_pb2.EncodeResult) -> dict[str, np.ndarray]:
    return {v.vector_name: np.frombuffer(v.values, dtype="<f4") for v in result.vectors}


def test_photo_package_reports_its_named_vectors(photo_embedded: encoder_pb2_grpc.EncoderServiceStub) -> None:
    info = photo_embedded.GetModelInfo(encoder_pb2.GetModelInfoRequest(), timeout=30)
    assert (info.model.name, info.model.version, info.dimension) == (
        "imagesearch-photo-lite0-minilm",
        "0.3.0",
        384,
    )
    assert [(v.name, v.dimension, v.from_image, v.from_text, v.primary) for v in info.vectors] == [
        ("semantic", 384, True, True, True),
        ("visual", 1280, True, False, False),
    ]
    assert info.text_preprocessing.tokenizer == "wordpiece" and info.text_preprocessing.context_length == 256
    assert info.image_preprocessing.color_conversion.startswith("rgb_on_white:")


def test_photo_package_via_triton_and_embedded_give_the_same_named_vectors(
    photo_embedded: encoder_pb2_grpc.EncoderServiceStub, photo_via_triton: encoder_pb2_grpc.EncoderServiceStub
) -> None:
    request = encoder_pb2.EncodeImagesRequest(images=_images(["rgb_jpeg", "palette_gif", "rgba_png"]))
    a, b = (
        photo_embedded.EncodeImages(request, timeout=120),
        photo_via_triton.EncodeImages(request, timeout=120),
    )
    assert a.model == b.model and a.model.name == "imagesearch-photo-lite0-minilm"
    for ra, rb in zip(a.results, b.results, strict=True):
        va, vb = _named(ra), _named(rb)
        assert sorted(va) == sorted(vb) == ["semantic", "visual"]
        assert {v.model.name for v in ra.vectors} == {a.model.name}
        assert va["semantic"].shape == (384,) and va["visual"].shape == (1280,)
        assert np.array_equal(np.frombuffer(ra.embedding.values, dtype="<f4"), va["semantic"])  # primary
        for name in va:
            assert abs(float(np.linalg.norm(va[name])) - 1) < 1e-5
            assert np.abs(va[name] - vb[name]).max() <= 1e-5

    texts = encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text=t) for t in TEXTS])
    a_t, b_t = photo_embedded.EncodeTexts(texts, timeout=60), photo_via_triton.EncodeTexts(texts, timeout=60)
    for ra, rb in zip(a_t.results, b_t.results, strict=True):
        assert list(_named(ra)) == ["semantic"]
        assert np.abs(_named(ra)["semantic"] - _named(rb)["semantic"]).max() <= 1e-5
    assert [r.truncated for r in a_t.results] == [False] * 6  # 90 words fit in 256 WordPiece tokens


def test_a_list_of_triton_instances_is_balanced_over_the_live_ones(triton: StackInfo) -> None:
    """encoder -> N Triton: a replica that cannot be reached (here: nothing listens on its port) is
    skipped by the round robin, and the encoder is ready and answers every call."""
    dead = free_port()
    env = {
        "IMAGESEARCH_ENCODER_BACKEND": "triton",
        "IMAGESEARCH_ENCODER_TRITON_GRPC_URL": f"127.0.0.1:{dead},{triton.triton_grpc_url}",
    }
    svc = ServiceProcess("services.encoder", env={**LIMITS, **env}).start(timeout_s=120)
    try:
        with grpc.insecure_channel(svc.address) as channel:
            stub = encoder_pb2_grpc.EncoderServiceStub(channel)
            for n in range(10):
                texts = encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(text=f"a cat {n}")])
                assert stub.EncodeTexts(texts, timeout=30).results[0].HasField("embedding")
    finally:
        svc.stop()
