"""Encoder gRPC servicer and wiring: each RPC converts its request (convert.py), calls the Encoder,
and converts the answer back; `build` wires settings, runtime and Encoder into the served app."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from imagesearch.v1 import encoder_pb2, encoder_pb2_grpc

from services.common.server import App, Probe
from services.encoder import convert
from services.encoder.backends import make_backend, package_from_settings
from services.encoder.budget import PixelBudget
from services.encoder.core import Encoder
from services.encoder.domain import ImageItem, Limits
from services.encoder.settings import EncoderSettings

SERVICE_NAME = "imagesearch.v1.EncoderService"


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, encoder: Encoder, settings: EncoderSettings) -> None:
        self._encoder = encoder
        self._settings = settings

    async def EncodeImages(
        self, request: encoder_pb2.EncodeImagesRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EncodeImagesResponse:
        model, results = await self._encoder.encode_images([convert.image_item(i) for i in request.images])
        ref = convert.model_ref(model)
        return encoder_pb2.EncodeImagesResponse(
            results=[convert.encode_result(r, ref) for r in results], model=ref
        )

    async def EncodeTexts(
        self, request: encoder_pb2.EncodeTextsRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.EncodeTextsResponse:
        model, results = await self._encoder.encode_texts([convert.text_item(t) for t in request.texts])
        ref = convert.model_ref(model)
        return encoder_pb2.EncodeTextsResponse(
            results=[convert.encode_result(r, ref) for r in results], model=ref
        )

    async def StreamEncodeImages(
        self,
        request_iterator: AsyncIterator[encoder_pb2.StreamEncodeImagesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[encoder_pb2.StreamEncodeImagesResponse]:
        async def items() -> AsyncIterator[ImageItem]:
            async for request in request_iterator:
                yield convert.image_item(request.image)

        async for model, result in self._encoder.encode_image_stream(items()):
            ref = convert.model_ref(model)
            yield encoder_pb2.StreamEncodeImagesResponse(result=convert.encode_result(result, ref), model=ref)

    async def GetModelInfo(
        self, request: encoder_pb2.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> encoder_pb2.GetModelInfoResponse:
        info = await self._encoder.model_info()
        runtime = info.runtime
        if self._settings.image_variant != "fp32":  # a variant, e.g. the int8 image tower
            runtime = f"{info.runtime} ({info.image_tower})"
        return convert.model_info_to_proto(info, self._encoder.limits, runtime)


async def build(settings: EncoderSettings) -> App:
    package = package_from_settings(settings)
    backend = make_backend(settings, package)
    encoder = Encoder(
        backend,
        package,
        Limits.from_settings(settings),
        decode_threads=settings.decode_threads,
        budget=PixelBudget.from_settings(settings),
    )
    await encoder.start()
    servicer = EncoderServicer(encoder, settings)
    return App(
        name="encoder",
        services=[(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, servicer, SERVICE_NAME)],
        probes=[Probe(backend.runtime, encoder.ready, required=True)],
        on_stop=encoder.close,
    )
