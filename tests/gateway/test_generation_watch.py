"""Page-cache hits served without a call to the search service, never stale: real encoder, search and
gateway processes, with the search service's generations in process ("memory") and in a private real
Redis (pub/sub), which the tests stop and restart (the shared stack's Redis is left alone).

Asserted: once the gateway's generation watch is live a hit makes no GetIndexGeneration call; an
acknowledged ingest or delete through the gateway changes the very next search; and so does a write
after the search service or Redis restarted (the watch is lost, the gateway reads generations again,
then watches again).
"""

from __future__ import annotations

import io
import re
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2
from PIL import Image, ImageDraw

from tests.gateway.suite import Suite, missing_prerequisites
from tests.search.test_outages import RedisServer
from tests.service_process import free_port

ALICE = [("authorization", "Bearer acme-alice")]
QUERY = "a red apple"


def _generation_reads(suite: Suite) -> int:
    """GetIndexGeneration calls the search service has started (its Prometheus counter)."""
    assert suite.search is not None
    url = f"http://127.0.0.1:{suite.search.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(
        r'grpc_server_started_total\{[^}]*grpc_method="GetIndexGeneration"[^}]*\} ([0-9.e+]+)', text
    )
    return int(float(m.group(1))) if m else 0


def _search(suite: Suite, text: str = QUERY) -> Any:
    # Near-duplicate collapse off: these synthetic pictures differ only in their background colour,
    # so the rerank would fold a fresh asset into an older look-alike and hide the write under test.
    rerank = gateway_pb2.RerankOptions(duplicate_threshold=1.0)
    request = gateway_pb2.SearchRequest(text=text, rerank=rerank)
    return suite.gateway_stub().Search(request, metadata=ALICE, timeout=30)


def _until_search_answers(suite: Suite, timeout_s: float = 30.0) -> None:
    """After a search-service restart: an uncached search (a text never asked: encoder and Query) is
    UNAVAILABLE until the gateway's channel has reconnected (backoff at most 2 s) and, if the calls
    made meanwhile opened its circuit breaker for Query, until that closes again. Availability is not
    what these tests are about; the page cache is."""
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        try:
            _search(suite, f"{QUERY} probe {attempt} {time.monotonic()}")
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _image(asset_id: str) -> bytes:
    """A picture of its own for every asset (an image stored before would be a duplicate)."""
    seed = zlib.crc32(asset_id.encode())
    img = Image.new("RGB", (160, 120), (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))
    ImageDraw.Draw(img).ellipse((30, 20, 130, 100), fill=(200, 20, 30))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _ingest(suite: Suite, asset_id: str, caption: str) -> None:
    req = gateway_pb2.IngestRequest(
        asset_id=asset_id, image=_image(asset_id), caption=caption, license=common_pb2.License(name="MIT")
    )
    acks = list(suite.gateway_stub().Ingest(iter([req]), metadata=ALICE, timeout=120))
    assert len(acks) == 1 and acks[0].asset_id == asset_id, acks
    assert acks[0].outcome in (gateway_pb2.INGEST_OUTCOME_CREATED, gateway_pb2.INGEST_OUTCOME_UPDATED), acks


def _delete(suite: Suite, asset_id: str) -> None:
    suite.gateway_stub().DeleteAsset(
        gateway_pb2.DeleteAssetRequest(asset_id=asset_id), metadata=ALICE, timeout=30
    )


def _ids(resp: Any) -> list[str]:
    return [r.asset.asset_id for r in resp.results]


def _wait_served_from_memory(suite: Suite, timeout_s: float = 20.0) -> Any:
    """Search until a cached hit made no generation read (the watch is live); the last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _search(suite)  # computes the page or reads the generation once under the new watch
        before = _generation_reads(suite)
        resp = _search(suite)
        if resp.cached and _generation_reads(suite) == before:
            return resp
        time.sleep(0.2)
    raise AssertionError("cached searches still read the index generation: the watch never became live")


def _assert_write_shows_at_once(suite: Suite, asset_id: str) -> None:
    """Cache the page, ingest an asset that matches it, search at once: the page is recomputed and
    holds the asset; delete it, search at once: gone."""
    cached = _wait_served_from_memory(suite)
    assert asset_id not in _ids(cached)
    _ingest(suite, asset_id, f"{QUERY} on a table")
    after = _search(suite)
    assert not after.cached and asset_id in _ids(after)
    _wait_served_from_memory(suite)
    _delete(suite, asset_id)
    gone = _search(suite)
    assert not gone.cached and asset_id not in _ids(gone)


def _seed(suite: Suite) -> None:
    for i in range(4):
        _ingest(suite, f"seed-{i}", f"{QUERY} number {i}")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["memory", "redis"])
def suite(request: pytest.FixtureRequest, suite_certs: Path) -> Iterator[Suite]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    search_env: dict[str, str] = {}
    if request.param == "redis":
        redis_server = request.getfixturevalue("redis_server")
        search_env = {
            "IMAGESEARCH_SEARCH_CACHE": "redis",
            "IMAGESEARCH_SEARCH_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
            "IMAGESEARCH_SEARCH_REDIS_RETRY_AFTER_S": "0.5",
        }
    # internal hops over mutual TLS, as `make run` runs them (the watch is one more call on that channel)
    s = Suite(
        "embedded",
        tls_dir=suite_certs,
        search_env=search_env,
        gateway_env={"IMAGESEARCH_GATEWAY_GENERATION_WATCH_RETRY_S": "0.2"},
    )
    s.start()
    try:
        _seed(s)
        yield s
    finally:
        s.stop()


def test_an_acknowledged_write_invalidates_the_cached_page_at_once(suite: Suite) -> None:
    _assert_write_shows_at_once(suite, "fresh-1")


def test_a_write_after_a_search_service_restart_invalidates_the_cached_page(suite: Suite) -> None:
    cached = _wait_served_from_memory(suite)
    suite.restart_search()
    _until_search_answers(suite)
    # Until the watch is back every search reads the generation; the page stays valid (no write).
    again = _search(suite)
    assert _ids(again) == _ids(cached)
    _assert_write_shows_at_once(suite, "fresh-2")


# Only the Redis mode has a Redis to restart (in "memory" mode the generations live in the process).
@pytest.mark.parametrize("suite", ["redis"], indirect=True)
def test_a_write_after_a_redis_restart_invalidates_the_cached_page(
    suite: Suite, request: pytest.FixtureRequest
) -> None:
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    _wait_served_from_memory(suite)
    redis_server.stop()
    # Redis down: the watch ends, generations cannot be trusted, nothing is served from the cache,
    # and a write acknowledged meanwhile shows at once.
    _ingest(suite, "fresh-3", f"{QUERY} in a bowl")
    during = _search(suite)
    assert not during.cached and "fresh-3" in _ids(during)
    redis_server.start()  # empty: its counters start again from the clock floor
    _assert_write_shows_at_once(suite, "fresh-4")
    assert "fresh-3" in _ids(_search(suite))
