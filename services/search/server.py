"""Search gRPC servicer: validation and proto <-> domain mapping only."""

from __future__ import annotations

from imagesearch.v1 import search_pb2_grpc

from services.common.server import App
from services.search.settings import SearchSettings

SERVICE_NAME = "imagesearch.v1.SearchService"


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    pass


async def build(settings: SearchSettings) -> App:
    return App(
        name="search",
        services=[(search_pb2_grpc.add_SearchServiceServicer_to_server, SearchServicer(), SERVICE_NAME)],
    )
