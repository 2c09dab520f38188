"""Encoder gRPC servicer: validation and proto <-> domain mapping only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from imagesearch.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc

from services.common.errors import status_number
from services.common.server import App, Probe
from services.encoder.backends import create_backend
from services.encoder.core import EmbeddingModel, Encoder, ImageItem, ItemResult, Limits, ModelInfo, TextItem
from services.encoder.settings import EncoderSettings

SERVICE_NAME = "imagesearch.v1.EncoderService"

_RESIZE_MODES = {
    "shortest_side_center_crop": encoder_pb2.RESIZE_MODE_SHORTEST_SIDE_CENTER_CROP,
    "squash": encoder_pb2.RESIZE_MODE_SQUASH,
}


def _model_ref(model: EmbeddingModel) -> common_pb2.ModelRef:
    return common_pb2.ModelRef(name=model.name, version=model.version)


def _result(result: ItemResult, ref: common_pb2.ModelRef) -> encoder_pb2.EncodeResult:
    if result.error is not None:
        return encoder_pb2.EncodeResult(
            id=result.id,
            error=common_pb2.ItemError(code=status_number(result.error.code), message=result.error.message),
            truncated=result.truncated,
        )
    assert result.embedding is not None
    return encoder_pb2.EncodeResult(
        id=result.id,
        embedding=common_pb2.Embedding(values=result.embedding.astype("<f4").tobytes(), model=ref),
        truncated=result.truncated,
    )


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, encoder: Encoder, settings: EncoderSettings) -> None:
        self._encoder = encoder
        self._settings = settings

    async def EncodeImages(
        self, request: encoder_pb2.EncodeImagesRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EncodeImagesResponse:
        model, results = await self._encoder.encode_images([ImageItem(i.id, i.data) for i in request.images])
        ref = _model_ref(model)
        return encoder_pb2.EncodeImagesResponse(results=[_result(r, ref) for r in results], model=ref)

    async def EncodeTexts(
        self, request: encoder_pb2.EncodeTextsRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EncodeTextsResponse:
        model, results = await self._encoder.encode_texts([TextItem(t.id, t.text) for t in request.texts])
        ref = _model_ref(model)
        return encoder_pb2.EncodeTextsResponse(results=[_result(r, ref) for r in results], model=ref)

    async def StreamEncodeImages(
        self,
        request_iterator: AsyncIterator[encoder_pb2.StreamEncodeImagesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[encoder_pb2.StreamEncodeImagesResponse]:
        async def items() -> AsyncIterator[ImageItem]:
            async for request in request_iterator:
                yield ImageItem(request.image.id, request.image.data)

        async for model, result in self._encoder.encode_image_stream(items()):
            ref = _model_ref(model)
            yield encoder_pb2.StreamEncodeImagesResponse(result=_result(result, ref), model=ref)

    async def GetModelInfo(
        self, request: encoder_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.GetModelInfoResponse:
        info: ModelInfo = await self._encoder.model_info()
        limits = self._encoder.limits
        runtime = info.runtime
        if info.image_tower != self._settings.image_model:  # a variant, e.g. the int8 image tower
            runtime = f"{info.runtime} ({info.image_tower})"
        return encoder_pb2.GetModelInfoResponse(
            model=_model_ref(info.model),
            dimension=info.dimension,
            image_preprocessing=encoder_pb2.ImagePreprocessing(
                size=info.image.size,
                resize_mode=_RESIZE_MODES.get(info.image.resize_mode, encoder_pb2.RESIZE_MODE_UNSPECIFIED),
                interpolation=info.image.interpolation,
                mean=list(info.image.mean),
                std=list(info.image.std),
                color_conversion=info.image.color_conversion,
            ),
            text_preprocessing=encoder_pb2.TextPreprocessing(
                tokenizer=info.text.tokenizer,
                context_length=info.text.context_length,
                lowercase=info.text.lowercase,
                max_text_chars=limits.max_text_chars,
            ),
            runtime=runtime,
            max_batch_images=limits.max_batch_images,
            max_batch_texts=limits.max_batch_texts,
            max_image_pixels=limits.max_image_pixels,
        )


async def build(settings: EncoderSettings) -> App:
    backend = create_backend(settings)
    limits = Limits(
        max_batch_images=settings.max_batch_images,
        max_batch_texts=settings.max_batch_texts,
        max_image_pixels=settings.max_image_pixels,
        max_image_bytes=settings.max_image_bytes,
        max_text_chars=settings.max_text_chars,
        stream_max_in_flight=settings.stream_max_in_flight,
        default_deadline_s=settings.default_deadline_s,
    )
    encoder = Encoder(backend, limits, decode_threads=settings.decode_threads)
    await encoder.start()
    servicer = EncoderServicer(encoder, settings)
    return App(
        name="encoder",
        services=[(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, servicer, SERVICE_NAME)],
        probes=[Probe(backend.runtime, encoder.ready, required=True)],
        on_stop=encoder.close,
    )
