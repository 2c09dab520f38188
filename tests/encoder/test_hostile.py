"""Hostile input against the encoder (issue 17): undecodable requests get a precise status whose message
says what to do, never an exception class name."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from imagesearch.v1 import encoder_pb2
from PIL import Image

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


@pytest.fixture(scope="module")
def service(model_repository: Path) -> Iterator[ServiceProcess]:
    env = {
        "IMAGESEARCH_ENCODER_MODEL_REPOSITORY": str(model_repository),
        "IMAGESEARCH_ENCODER_LOG_LEVEL": "info",
    }
    svc = ServiceProcess("services.encoder", env=env).start(timeout_s=120)
    try:
        yield svc
    finally:
        svc.stop()


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
