"""Failure handling with real components: Redis going away (the cache is bypassed, never an error),
Redis restarting empty (generations keep growing), and Weaviate unreachable or going away (UNAVAILABLE,
within the caller's deadline)."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesearch.v1 import search_pb2, search_pb2_grpc

from devstack import StackInfo
from devstack.weaviate import weaviate_api_key
from tests.search.helpers import embedding, record, unit
from tests.service_process import ServiceProcess, free_port

RNG = np.random.default_rng(11)


class RedisServer:
    """A private real redis-server (the shared stack's Redis is left alone)."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (devstack installs it)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _health(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status)


def _wait_health(channel: grpc.Channel, service: str, status: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _health(channel, service) == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"health of {service!r} did not become {status}")


@pytest.mark.integration
def test_redis_outage_degrades_to_uncached_service(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {
        "IMAGESEARCH_SEARCH_DATA_DIR": str(tmp_path / "data"),
        "IMAGESEARCH_SEARCH_CACHE": "redis",
        "IMAGESEARCH_SEARCH_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "IMAGESEARCH_SEARCH_HEALTH_INTERVAL_S": "0.2",
        "IMAGESEARCH_SEARCH_REDIS_RETRY_AFTER_S": "0.2",
    }
    with ServiceProcess("services.search", env=env) as svc, grpc.insecure_channel(svc.address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        t = f"t{uuid.uuid4().hex[:8]}"
        v = unit(RNG)
        stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=t, assets=[record("r1", v, caption="heron")]))
        req = search_pb2.QueryRequest(tenant=t, text="heron", vector=embedding(v))
        assert not stub.Query(req).cached
        assert stub.Query(req).cached
        _wait_health(channel, "backend:redis", health_pb2.HealthCheckResponse.SERVING)

        redis_server.stop()
        # Queries and writes keep working, uncached; health is degraded, the service stays SERVING.
        for _ in range(3):
            resp = stub.Query(req)
            assert not resp.cached and [h.asset.asset_id for h in resp.hits] == ["r1"]
        w = stub.UpsertAssets(
            search_pb2.UpsertAssetsRequest(tenant=t, assets=[record("r2", unit(RNG), caption="heron")])
        )
        assert not w.results[0].HasField("error")
        _wait_health(channel, "backend:redis", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert _health(channel, "") == health_pb2.HealthCheckResponse.SERVING
        # Nobody may validate a derived cache against a generation the search service cannot vouch for.
        gen_req = search_pb2.GetIndexGenerationRequest(tenant=t)
        assert not stub.GetIndexGeneration(gen_req).consistent
        assert {h.asset.asset_id for h in stub.Query(req).hits} == {"r1", "r2"}

        redis_server.start()  # empty again, on the same port
        _wait_health(channel, "backend:redis", health_pb2.HealthCheckResponse.SERVING)
        first = stub.Query(req)
        assert not first.cached and {h.asset.asset_id for h in first.hits} == {"r1", "r2"}
        assert stub.Query(req).cached
        assert stub.GetIndexGeneration(gen_req).consistent


@pytest.mark.integration
def test_weaviate_unreachable_is_unavailable() -> None:
    env = {
        "IMAGESEARCH_SEARCH_BACKEND": "weaviate",
        "IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT": str(free_port()),  # nothing listens there
        "IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT": str(free_port()),
        "IMAGESEARCH_SEARCH_WEAVIATE_TIMEOUT_S": "2",
        "IMAGESEARCH_SEARCH_CACHE": "none",
    }
    with (
        ServiceProcess("services.search", env=env, wait_serving=False) as svc,
        grpc.insecure_channel(svc.address) as channel,
    ):
        assert _health(channel, "") == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = search_pb2_grpc.SearchServiceStub(channel)
        calls = [
            (stub.Query, search_pb2.QueryRequest(tenant="t1", text="x")),
            (stub.UpsertAssets, search_pb2.UpsertAssetsRequest(tenant="t1", assets=[record("a", unit(RNG))])),
            (stub.GetAssets, search_pb2.GetAssetsRequest(tenant="t1", asset_ids=["a"])),
            (stub.DeleteAssets, search_pb2.DeleteAssetsRequest(tenant="t1", asset_ids=["a"])),
        ]
        for fn, req in calls:
            with pytest.raises(grpc.RpcError) as err:
                fn(req, timeout=20)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (fn, err.value.details())


# ---- Redis restarts: generations never repeat (issue 17, F2) ---------------------------------------------


@pytest.mark.integration
def test_generations_keep_growing_across_a_redis_restart(redis_server: RedisServer, tmp_path: Path) -> None:
    """A gateway page cached at generation N must never match again: after a Redis without persistence
    restarts empty (the worst case: the stack's Redis keeps its counters in an fsync'd append-only file),
    a quiet tenant's generation continues above N instead of from 0."""
    env = {
        "IMAGESEARCH_SEARCH_DATA_DIR": str(tmp_path / "data"),
        "IMAGESEARCH_SEARCH_CACHE": "redis",
        "IMAGESEARCH_SEARCH_REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
        "IMAGESEARCH_SEARCH_CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}:",
        "IMAGESEARCH_SEARCH_HEALTH_INTERVAL_S": "0.2",
        "IMAGESEARCH_SEARCH_REDIS_RETRY_AFTER_S": "0.2",
    }
    with ServiceProcess("services.search", env=env) as svc, grpc.insecure_channel(svc.address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        t = f"t{uuid.uuid4().hex[:8]}"
        gen_req = search_pb2.GetIndexGenerationRequest(tenant=t)
        seen = {stub.GetIndexGeneration(gen_req).index_generation}
        for i in range(3):
            w = stub.UpsertAssets(
                search_pb2.UpsertAssetsRequest(tenant=t, assets=[record(f"r{i}", unit(RNG))])
            )
            seen.add(w.index_generation)
        before = stub.GetIndexGeneration(gen_req)
        assert before.consistent and before.index_generation == max(seen)

        redis_server.stop()
        try:
            _wait_health(channel, "backend:redis", health_pb2.HealthCheckResponse.NOT_SERVING)
        finally:
            redis_server.start()  # same port, empty
        _wait_health(channel, "backend:redis", health_pb2.HealthCheckResponse.SERVING)
        deadline = time.monotonic() + 10
        after = stub.GetIndexGeneration(gen_req)
        while not after.consistent and time.monotonic() < deadline:
            time.sleep(0.1)
            after = stub.GetIndexGeneration(gen_req)
        assert after.consistent
        assert after.index_generation > before.index_generation
        # The writes that follow climb from there, never onto a number handed out before the restart.
        last = after.index_generation
        for i in range(3):
            w = stub.UpsertAssets(
                search_pb2.UpsertAssetsRequest(tenant=t, assets=[record(f"s{i}", unit(RNG))])
            )
            assert w.index_generation > last and w.index_generation not in seen
            last = w.index_generation
        req = search_pb2.QueryRequest(tenant=t, vector=embedding(unit(RNG)), limit=10)
        first = stub.Query(req)
        assert first.index_generation == last and len(first.hits) == 6
        assert stub.Query(req).cached


# ---- Weaviate going away: UNAVAILABLE within the caller's deadline (issue 17, F4) --------------------------


class TcpProxy:
    """Forwards a loopback port to another. `stop` makes the target look dead (open connections are
    closed, new ones refused); `start` opens the same port again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._running = False

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.05)
        self._running = True
        self._thread = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        self._thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while self._running:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.mark.integration
def test_weaviate_going_down_is_unavailable_well_within_the_deadline(search_stack: StackInfo) -> None:
    """Connected to a working Weaviate, which then stops answering connections: every call fails
    UNAVAILABLE at once (the client's own retries would wait past the deadline: DEADLINE_EXCEEDED), and
    the service serves again soon after Weaviate is back."""
    http = TcpProxy(search_stack.weaviate_http_port)
    grpc_proxy = TcpProxy(search_stack.weaviate_grpc_port)
    http.start()
    grpc_proxy.start()
    env = {
        "IMAGESEARCH_SEARCH_BACKEND": "weaviate",
        "IMAGESEARCH_SEARCH_WEAVIATE_HOST": "127.0.0.1",
        "IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT": str(http.port),
        "IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT": str(grpc_proxy.port),
        "IMAGESEARCH_SEARCH_WEAVIATE_API_KEY": weaviate_api_key(),
        "IMAGESEARCH_SEARCH_WEAVIATE_COLLECTION": f"Test{uuid.uuid4().hex[:12]}",
        "IMAGESEARCH_SEARCH_CACHE": "none",  # the default 10 s Weaviate timeout stays
    }
    try:
        with ServiceProcess("services.search", env=env) as svc, grpc.insecure_channel(svc.address) as channel:
            stub = search_pb2_grpc.SearchServiceStub(channel)
            t = f"t{uuid.uuid4().hex[:8]}"
            v = unit(RNG)
            stub.UpsertAssets(
                search_pb2.UpsertAssetsRequest(tenant=t, assets=[record("w1", v, caption="heron")])
            )
            query = search_pb2.QueryRequest(tenant=t, text="heron", vector=embedding(v))
            assert [h.asset.asset_id for h in stub.Query(query, timeout=10).hits] == ["w1"]

            http.stop()
            grpc_proxy.stop()
            calls = [
                (stub.Query, query),
                (stub.Query, search_pb2.QueryRequest(tenant=t, vector=embedding(v))),
                (stub.GetAssets, search_pb2.GetAssetsRequest(tenant=t, asset_ids=["w1"])),
                (
                    stub.UpsertAssets,
                    search_pb2.UpsertAssetsRequest(tenant=t, assets=[record("w2", unit(RNG))]),
                ),
                (
                    stub.FindByContentHash,
                    search_pb2.FindByContentHashRequest(tenant=t, content_sha256=["0" * 64]),
                ),
            ]
            for fn, req in calls:
                start = time.monotonic()
                with pytest.raises(grpc.RpcError) as err:
                    fn(req, timeout=3)
                elapsed = time.monotonic() - start
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (fn, err.value.details())
                assert elapsed < 2.5, (fn, elapsed)  # at once, not at the 3 s deadline (a busy runner)
                assert not re.search(r"[A-Z]\w*(Error|Exception)\b", err.value.details()), err.value.details()

            http.start()
            grpc_proxy.start()
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert [h.asset.asset_id for h in stub.Query(query, timeout=3).hits] == ["w1"]
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc.details()
                    assert time.monotonic() < deadline, "not serving 10 s after Weaviate was back"
                    time.sleep(0.2)
    finally:
        http.stop()
        grpc_proxy.stop()
