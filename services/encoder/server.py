"""Encoder gRPC servicer: validation and proto <-> domain mapping only."""

from __future__ import annotations

from imagesearch.v1 import encoder_pb2_grpc

from services.common.server import App
from services.encoder.settings import EncoderSettings

SERVICE_NAME = "imagesearch.v1.EncoderService"


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    pass


async def build(settings: EncoderSettings) -> App:
    return App(
        name="encoder",
        services=[(encoder_pb2_grpc.add_EncoderServiceServicer_to_server, EncoderServicer(), SERVICE_NAME)],
    )
