"""The real local stack (devstack): each component answers, `up` is idempotent, and one
component can be stopped and started again on the same ports."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
import redis
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from devstack import REPO_ROOT, WEAVIATE_VERSION, Stack, StackInfo
from devstack.triton import expected_models
from devstack.versions import TRITON_SERVER_VERSION
from devstack.weaviate import auth_headers

pytestmark = pytest.mark.integration

_PORT_FIELDS = (
    "redis_port",
    "weaviate_http_port",
    "weaviate_grpc_port",
    "weaviate_metrics_port",
    "triton_http_port",
    "triton_grpc_port",
    "triton_metrics_port",
)


def _ports(info: StackInfo) -> dict[str, int | None]:
    return {f: getattr(info, f) for f in _PORT_FIELDS}


def _served_models(info: StackInfo) -> list[str]:
    """The models in the repository the running Triton serves."""
    assert info.model_repository is not None
    return expected_models(Path(info.model_repository))


def _eventually_ready(client: triton_grpc.InferenceServerClient, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.is_server_ready():
                return True
        except InferenceServerException:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def test_redis_ping(stack: StackInfo) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_weaviate_meta_reports_pinned_version(stack: StackInfo) -> None:
    meta_url = f"{stack.weaviate_http_url}/v1/meta"
    with urllib.request.urlopen(urllib.request.Request(meta_url, headers=auth_headers()), timeout=5) as resp:
        meta = json.load(resp)
    assert meta["version"] == WEAVIATE_VERSION.removeprefix("v")


def test_triton_live_ready_and_every_model_ready(stack: StackInfo) -> None:
    expected = _served_models(stack)
    assert expected, f"no models in {stack.model_repository}"
    client = triton_grpc.InferenceServerClient(stack.triton_grpc_url)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        # The pinned pytriton wheel carries the Triton release docker-compose.yml runs (devstack/versions.py).
        assert client.get_server_metadata(as_json=True)["version"] == TRITON_SERVER_VERSION
        index = {m["name"]: m.get("state") for m in client.get_model_repository_index(as_json=True)["models"]}
        assert {name: index.get(name) for name in expected} == {name: "READY" for name in expected}
        for name in expected:
            assert client.is_model_ready(name), name
    finally:
        client.close()


def test_up_twice_is_idempotent(stack: StackInfo) -> None:
    manager = Stack(REPO_ROOT)
    before = manager.info()
    again = manager.up()
    assert again.started == ()
    assert dict(again.pids) == dict(before.pids)
    assert _ports(again) == _ports(stack)


def test_stop_and_start_one_component(stack: StackInfo) -> None:
    """Stopping Triton makes clients see UNAVAILABLE; start() brings it back on the same ports."""
    manager = Stack(REPO_ROOT)
    assert manager.stop("triton") is True
    assert manager.status()["triton"].state == "stopped"
    assert manager.info().triton_grpc_port is None
    client = triton_grpc.InferenceServerClient(stack.triton_grpc_url)
    try:
        with pytest.raises(InferenceServerException) as err:
            client.is_server_live()
        assert "UNAVAILABLE" in str(err.value.status())

        restarted = manager.start("triton")
        assert restarted.started == ("triton",)
        assert _ports(restarted) == _ports(stack)
        # The same long-lived client recovers once its channel's reconnect backoff (~1 s) has passed.
        assert _eventually_ready(client, timeout_s=15.0)
        assert all(client.is_model_ready(name) for name in _served_models(stack))
    finally:
        client.close()
    # The other components were not touched.
    assert manager.status()["redis"].state == "running"
    assert manager.status()["weaviate"].state == "running"
