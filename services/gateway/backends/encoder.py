"""EncoderService over gRPC (EncodeTexts / EncodeImages), behind `base.EncoderClient`."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc

from services.gateway import convert
from services.gateway.backends.calls import BackendCalls, CircuitBreaker, RetryPolicy
from services.gateway.domain import EncodedBatch


class GrpcEncoderClient:
    def __init__(
        self,
        ch: grpc.aio.Channel,
        breaker: CircuitBreaker,
        retry: RetryPolicy,
        text_deadline_s: float,
        image_deadline_s: float,
    ) -> None:
        self._stub = encoder_pb2_grpc.EncoderServiceStub(ch)
        self._calls = BackendCalls("encoder", breaker, retry)
        self._text_s = text_deadline_s
        self._image_s = image_deadline_s
        self.breaker = breaker

    async def encode_texts(self, texts: Sequence[str]) -> EncodedBatch:
        req = convert.text_request(texts)
        resp = await self._calls.call(
            self._stub.EncodeTexts, req, self._text_s, idempotent=True, method="EncodeTexts"
        )
        return convert.encoded_batch(resp)

    async def encode_images(self, images: Sequence[bytes]) -> EncodedBatch:
        req = convert.image_request(images)
        resp = await self._calls.call(
            self._stub.EncodeImages, req, self._image_s, idempotent=True, method="EncodeImages"
        )
        return convert.encoded_batch(resp)

    async def ready(self) -> bool:
        resp = await self._calls.call(
            self._stub.GetModelInfo,
            encoder_pb2.GetModelInfoRequest(),
            self._text_s,
            idempotent=False,
            method="GetModelInfo",
        )
        return bool(resp.model.name)
