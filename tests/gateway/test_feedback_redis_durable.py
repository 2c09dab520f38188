"""The Redis feedback store survives Redis itself dying: a private redis-server started with exactly
devstack's command line (append-only file, fsync every second) is killed with SIGKILL after a write
and started again on the same data dir; the search record, the event and the totals are all there.
The shared stack's Redis is never touched.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import time
from pathlib import Path

import pytest

from devstack.redis import Redis, _find_redis_server, redis_ping
from services.gateway.backends.feedback.redis import RedisFeedbackStore
from services.gateway.domain import FeedbackKind, SearchRecord, StoredFeedback
from tests.service_process import free_port


def _start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not redis_ping(port, timeout=0.2):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    return proc


@pytest.mark.integration
def test_feedback_survives_a_killed_redis(tmp_path: Path) -> None:
    if _find_redis_server() is None:
        pytest.skip("redis-server is not installed (devstack installs it: make stack-up)")
    port = free_port()
    argv = Redis().command({"port": port}, tmp_path, "test").argv
    assert "--appendonly" in argv and argv[argv.index("--appendonly") + 1] == "yes"
    url = f"redis://127.0.0.1:{port}/0"
    event = StoredFeedback(
        "acme", "e1", FeedbackKind.CLICK, "s1", "a1", "exp/a", 1, 0, 0, dt.datetime.now(dt.UTC)
    )

    async def write() -> None:
        store = RedisFeedbackStore(url, "p:", 1.0)
        try:
            await store.record_searches(
                [SearchRecord("s1", "acme", "exp/a", {"a1": 1})], 3600.0, {"exp/a": 1}
            )
            assert (await store.put(event, 3600.0)).recorded
        finally:
            await store.close()

    async def read() -> None:
        store = RedisFeedbackStore(url, "p:", 1.0)
        try:
            assert await store.get_search("acme", "s1") is not None
            assert not (await store.put(event, 3600.0)).recorded  # still known: a duplicate
            totals = (await store.arm_totals())["exp/a"]
            assert (totals.searches, totals.clicks, totals.clicked_searches) == (1, 1, 1)
        finally:
            await store.close()

    proc = _start(argv, port)
    try:
        asyncio.run(write())
        time.sleep(1.5)  # also holds for appendfsync everysec (a second later the writes are on disk)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc = _start(argv, port)
        asyncio.run(read())
    finally:
        proc.terminate()
        proc.wait(10)
