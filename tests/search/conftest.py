"""Fixtures for the search service tests.

`search_stack` brings up the real Redis and Weaviate only (devstack; running ones are reused and
left running). `search_service` runs the real service process (tests/service_process.py) once per
configuration: the embedded backend with the in-process cache, and Weaviate with Redis.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from imagesearch.v1 import search_pb2_grpc

from devstack import Stack, StackInfo
from devstack.weaviate import weaviate_api_key
from tests.service_process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def search_stack() -> Iterator[StackInfo]:
    if os.environ.get("IMAGESEARCH_SKIP_STACK", "") not in ("", "0"):
        pytest.skip("IMAGESEARCH_SKIP_STACK is set")
    manager = Stack(REPO_ROOT)
    info = manager.up(only="redis,weaviate")
    try:
        yield info
    finally:
        manager.down(only=info.started)


def weaviate_env(info: StackInfo, collection: str) -> dict[str, str]:
    return {
        "IMAGESEARCH_SEARCH_BACKEND": "weaviate",
        "IMAGESEARCH_SEARCH_WEAVIATE_HOST": info.host,
        "IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT": str(info.weaviate_http_port),
        "IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT": str(info.weaviate_grpc_port),
        "IMAGESEARCH_SEARCH_WEAVIATE_API_KEY": weaviate_api_key(),
        "IMAGESEARCH_SEARCH_WEAVIATE_COLLECTION": collection,
    }


class Service:
    def __init__(self, proc: ServiceProcess, kind: str) -> None:
        self.proc = proc
        self.kind = kind
        self.channel = grpc.insecure_channel(proc.address)
        self.stub = search_pb2_grpc.SearchServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.proc.stop()


@pytest.fixture(scope="module", params=["embedded", "weaviate"])
def search_service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service over gRPC: embedded + memory cache, or Weaviate + Redis (integration)."""
    if request.param == "embedded":
        env = {
            "IMAGESEARCH_SEARCH_DATA_DIR": str(tmp_path_factory.mktemp("search-data")),
            "IMAGESEARCH_SEARCH_CACHE": "memory",
        }
    else:
        info = request.getfixturevalue("search_stack")
        env = {
            **weaviate_env(info, f"Test{uuid.uuid4().hex[:12]}"),
            "IMAGESEARCH_SEARCH_CACHE": "redis",
            "IMAGESEARCH_SEARCH_REDIS_URL": info.redis_url or "",
            "IMAGESEARCH_SEARCH_CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        }
    svc = Service(ServiceProcess("services.search", env=env).start(), request.param)
    try:
        yield svc
    finally:
        svc.close()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that run on the Weaviate parametrisation or use the stack directly need the real stack."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_weaviate = callspec is not None and callspec.params.get("search_service") == "weaviate"
        if on_weaviate or "search_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)
