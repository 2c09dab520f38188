"""Gateway gRPC servicer: validation and proto <-> domain mapping only."""

from __future__ import annotations

from imagesearch.v1 import gateway_pb2_grpc

from services.common.server import App
from services.gateway.settings import GatewaySettings

SERVICE_NAME = "imagesearch.v1.GatewayService"


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    pass


async def build(settings: GatewaySettings) -> App:
    return App(
        name="gateway",
        services=[(gateway_pb2_grpc.add_GatewayServiceServicer_to_server, GatewayServicer(), SERVICE_NAME)],
    )
