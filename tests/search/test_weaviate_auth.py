"""The local stack's Weaviate takes no anonymous call (its gRPC API listens on every interface), and a
search service whose key Weaviate refuses stops at start with an error that names the setting to fix
and not the key."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import grpc
import pytest
from weaviate.proto.v1.v5261.v1 import search_get_pb2, weaviate_pb2_grpc

from devstack import StackInfo
from devstack.weaviate import auth_headers
from tests.search.conftest import weaviate_env
from tests.service_process import ServiceProcess

pytestmark = pytest.mark.integration


def test_the_stacks_weaviate_refuses_anonymous_rest_and_grpc_calls(search_stack: StackInfo) -> None:
    meta = f"{search_stack.weaviate_http_url}/v1/meta"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(meta, timeout=5)
    assert refused.value.code == 401
    with urllib.request.urlopen(urllib.request.Request(meta, headers=auth_headers()), timeout=5) as ok:
        assert ok.status == 200

    request = search_get_pb2.SearchRequest(collection="Absent", limit=1)
    bearer = auth_headers()["Authorization"]
    with grpc.insecure_channel(f"{search_stack.host}:{search_stack.weaviate_grpc_port}") as channel:
        stub = weaviate_pb2_grpc.WeaviateStub(channel)
        with pytest.raises(grpc.RpcError) as anonymous:
            stub.Search(request, timeout=10)
        assert "unauthorized" in (anonymous.value.details() or "")
        with pytest.raises(grpc.RpcError) as keyed:  # past authentication: the collection is unknown
            stub.Search(request, timeout=10, metadata=(("authorization", bearer),))
        assert "could not find class Absent" in (keyed.value.details() or "")


@pytest.mark.parametrize("key", ["", "not-the-key-{}"])
def test_a_search_service_weaviate_refuses_stops_and_names_the_setting(
    search_stack: StackInfo, key: str
) -> None:
    key = key.format(uuid.uuid4().hex)
    env = {
        **weaviate_env(search_stack, f"Test{uuid.uuid4().hex[:12]}"),
        "IMAGESEARCH_SEARCH_WEAVIATE_API_KEY": key,
        "IMAGESEARCH_SEARCH_CACHE": "none",
    }
    with pytest.raises(RuntimeError) as stopped:
        ServiceProcess("services.search", env=env).start(timeout_s=60)
    output = str(stopped.value)
    assert "exited with 1" in output
    assert "weaviate refused this service's credentials; set IMAGESEARCH_SEARCH_WEAVIATE_API_KEY" in output
    if key:
        assert key not in output
