"""Shared pytest fixtures.

The `stack` fixture: the real local backend stack (Redis, Weaviate, Triton) started by devstack.
The `object_store` fixture: MinIO (the optional devstack component), up once per test session.
The `suite_certs` fixture: a suite certificate directory (CA + gateway, search, encoder, operator) for
services started with mutual TLS (`ServiceProcess(..., tls_dir=suite_certs)`, `Suite(..., tls_dir=...)`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc.experimental.aio import init_grpc_aio

from devstack import Stack, StackInfo
from services.common import certs

_REPO_ROOT = Path(__file__).resolve().parent.parent

# gRPC's asyncio runtime is torn down whenever its last channel or server goes, and made again by the
# next: in a long session (Weaviate clients made and closed by the cluster tests, after hundreds of
# asyncio tests) a teardown's join of its poller thread hung for the 600 s test timeout (CI, stop 27:
# AioChannel.__dealloc__ -> shutdown_grpc_aio -> PollerCompletionQueue.shutdown). One reference held for
# the session, from the main thread, keeps it up: grpc/grpc#22365 (the maintainers' workaround), #40989.
init_grpc_aio()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that uses the real stack is an integration test (`-m "not integration"` skips them)."""
    for item in items:
        if {"stack", "object_store"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def suite_certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once per session by the suite's own certificate tool."""
    directory = tmp_path_factory.mktemp("suite-certs")
    certs.init(directory)
    return directory


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    """Redis, Weaviate and Triton, up once per test session (components already running are reused).

    At the end only the components this session started are stopped: a developer's running stack is
    left alone. Triton serves triton_models/ unless IMAGESEARCH_TRITON_MODEL_REPOSITORY says otherwise.
    IMAGESEARCH_SKIP_STACK=1 skips the tests that need it.
    """
    if os.environ.get("IMAGESEARCH_SKIP_STACK", "") not in ("", "0"):
        pytest.skip("IMAGESEARCH_SKIP_STACK is set")
    manager = Stack(_REPO_ROOT)
    info = manager.up()
    try:
        yield info
    finally:
        manager.down(only=info.started)


@pytest.fixture(scope="session")
def object_store() -> Iterator[StackInfo]:
    """MinIO, the S3-compatible object store (built from source on first use, ~3 min, then cached).

    Optional in the stack: started here only for the tests that name it, stopped at the end when this
    session started it. Its `service_env` points a gateway's blob store at it.
    """
    if os.environ.get("IMAGESEARCH_SKIP_STACK", "") not in ("", "0"):
        pytest.skip("IMAGESEARCH_SKIP_STACK is set")
    manager = Stack(_REPO_ROOT)
    info = manager.up(only=["minio"])
    try:
        yield info
    finally:
        manager.down(only=info.started)
