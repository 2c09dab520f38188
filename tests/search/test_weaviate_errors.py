"""How the Weaviate backend words Weaviate's failures for callers (pure logic: a stand-in client that
only says it is connected; the failures are the exceptions the real client raises)."""

from __future__ import annotations

import httpx
import pytest
from weaviate.exceptions import WeaviateQueryError

from services.common.errors import Unavailable
from services.search.backends.weaviate import WeaviateBackend


class _ConnectedClient:
    def is_connected(self) -> bool:
        return True


def _backend() -> WeaviateBackend:
    backend = WeaviateBackend("127.0.0.1", 1, 2, "Errors", 1.0, 1.0, {})
    backend._client = _ConnectedClient()  # type: ignore[assignment]
    return backend


async def _fails(message: str) -> None:
    raise WeaviateQueryError(message, "GRPC search")


async def test_a_query_while_weaviate_is_still_loading_its_index_is_unavailable() -> None:
    # Seen right after a Weaviate restart (make chaos): it answers before it has loaded the collection.
    message = "explorer: get class: vector search: tried to browse non-existing index for E2e1x2"
    with pytest.raises(Unavailable) as caught:
        await _backend()._call(lambda: _fails(message), "keyword query")
    assert caught.value.message == "weaviate is still loading the collection (keyword query); retry later"


async def test_an_unexpected_query_error_is_not_disguised_as_unavailable() -> None:
    with pytest.raises(WeaviateQueryError):
        await _backend()._call(lambda: _fails("invalid 'where' filter: unknown operator"), "vector query")


async def test_a_weaviate_killed_mid_rest_call_is_unavailable_not_internal() -> None:
    # Seen in the chaos test: the client let httpx's error through while reading the collection's config.
    async def disconnected() -> None:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    with pytest.raises(Unavailable) as caught:
        await _backend()._call(disconnected, "collection info")
    assert "retry later" in caught.value.message and "disconnected" not in caught.value.message
