"""Hostile input against the encoder (issue 17): damaged images of every supported format and undecodable
requests get a precise status whose message says what to do, never an exception class name or Pillow's
own words."""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc
from PIL import Image

from services.common.errors import DomainError
from services.encoder.preprocess import decode_image
from tests.encoder import parity_images
from tests.service_process import ServiceProcess

CAP = 40_000_000
# An exception class name (SyntaxError, OSError, UnidentifiedImageError...) or Python/Pillow internals.
INTERNALS = re.compile(
    r"[A-Z]\w*(Error|Exception)\b|<class |Traceback|_io\.|BytesIO|0x[0-9a-f]{6,}|"
    r"cannot identify image file|broken data stream|image file is truncated|decoder|Pillow|PIL\b"
)


def _save(fmt: str, mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, fmt)
    return buf.getvalue()


def damaged_images() -> list[tuple[str, bytes]]:
    jpeg = parity_images.case_bytes("rgb_jpeg")
    png = parity_images.case_bytes("rgb_landscape_png")
    corrupt_png = bytearray(png)
    corrupt_png[100:400] = b"\xff" * 300
    out = [
        ("jpeg-half", jpeg[: len(jpeg) // 2]),
        ("jpeg-header-only", jpeg[:200]),
        ("jpeg-soi-garbage", b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + b"\x13" * 64),
        ("png-third", png[: len(png) // 3]),
        ("png-corrupt-data", bytes(corrupt_png)),
        ("png-bad-ihdr", b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + b"\xff" * 17),
        ("png-signature-only", b"\x89PNG\r\n\x1a\n"),
        ("gif-truncated", _save("GIF")[:20]),
        ("bmp-truncated", _save("BMP")[:60]),
        ("bmp-bad-header", b"BM" + b"\xff" * 60),
        ("tiff-bad-ifd", b"II*\x00" + struct.pack("<I", 10**6) + b"\x00" * 16),
        ("tiff-truncated", _save("TIFF")[:300]),
        ("webp-garbage", b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x07" * 24),
    ]
    return out


@pytest.mark.parametrize(("name", "data"), damaged_images(), ids=[n for n, _ in damaged_images()])
def test_damaged_images_are_described_without_internals(name: str, data: bytes) -> None:
    with pytest.raises(DomainError) as info:
        decode_image(data, 224, CAP)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, info.value.message
    assert not INTERNALS.search(info.value.message), info.value.message


@pytest.fixture(scope="module")
def service(model_repository: Path) -> Iterator[ServiceProcess]:
    env = {
        "IMAGESEARCH_ENCODER_MODEL_REPOSITORY": str(model_repository),
        # Hostile inputs test the service, not a model: the clip-art package's image tower is ~8x faster
        # on CPU, and it runs on the stand-in towers where the demo model is absent.
        "IMAGESEARCH_ENCODER_MODEL_PACKAGE": "demo",
        "IMAGESEARCH_ENCODER_LOG_LEVEL": "info",
    }
    svc = ServiceProcess("services.encoder", env=env).start(timeout_s=120)
    try:
        yield svc
    finally:
        svc.stop()


def test_damaged_images_fail_per_item_without_internals(service: ServiceProcess) -> None:
    items = [("good", parity_images.case_bytes("rgb_jpeg")), *damaged_images()]
    with grpc.insecure_channel(service.address) as channel:
        stub = encoder_pb2_grpc.EncoderServiceStub(channel)
        response = stub.EncodeImages(
            encoder_pb2.EncodeImagesRequest(images=[encoder_pb2.ImageInput(id=i, data=d) for i, d in items]),
            timeout=60,
        )
    assert [r.id for r in response.results] == [i for i, _ in items]
    assert response.results[0].HasField("embedding")
    for r in response.results[1:]:
        assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0], (r.id, r.error.message)
        assert not INTERNALS.search(r.error.message), (r.id, r.error.message)


def test_undecodable_requests_are_invalid_argument(service: ServiceProcess) -> None:
    with grpc.insecure_channel(service.address) as channel:
        texts = channel.unary_unary(
            "/imagesearch.v1.EncoderService/EncodeTexts",
            request_serializer=None,
            response_deserializer=encoder_pb2.EncodeTextsResponse.FromString,
        )
        # EncodeTextsRequest.texts[0].text (field 1 -> TextInput field 2) holds invalid UTF-8.
        text_input = b"\x12\x03\xc3\x28a"
        bad_utf8 = b"\x0a" + bytes([len(text_input)]) + text_input
        truncated = encoder_pb2.EncodeTextsRequest(
            texts=[encoder_pb2.TextInput(text="a cat")]
        ).SerializeToString()[:-1]
        for raw in (bad_utf8, truncated):
            with pytest.raises(grpc.RpcError) as err:
                texts(raw, timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert err.value.details().startswith(
                "the request could not be decoded as imagesearch.v1.EncodeTextsRequest: "
            ), err.value.details()
            assert not INTERNALS.search(err.value.details()), err.value.details()
        stream = channel.stream_stream(
            "/imagesearch.v1.EncoderService/StreamEncodeImages",
            request_serializer=None,
            response_deserializer=encoder_pb2.StreamEncodeImagesResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            list(stream(iter([b"\x0a\x05\x12\x03abc"[:-1]]), timeout=30))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert "imagesearch.v1.StreamEncodeImagesRequest" in err.value.details()
