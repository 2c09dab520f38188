"""Records written as JSON lines in batches, off the request path: `append` only queues a dict; a
background task renders what queued and writes it with one write() per batch, fsync'd when the sink
is a file (durable by batch: a crash loses at most the last `flush_interval_s` of records, a clean
stop loses none, because `close` writes what is left).

For records that must not slow the call that makes them (the gateway's audit trail: two per search)
and must still reach a durable sink: rendering and printing each line in the request, through the
logging pipeline, was a quarter of a cached search's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sys
import time
from typing import Any

import orjson
import structlog

log = structlog.get_logger("jsonlines")


class JsonLinesWriter:
    def __init__(self, path: str | None, flush_interval_s: float, max_batch: int = 512) -> None:
        """`path`: a file appended to (created 0600) and fsync'd per batch; None: standard error."""
        self._fd = (
            os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if path else sys.stderr.fileno()
        )
        self._durable = path is not None
        self._interval_s = flush_interval_s
        self._max_batch = max_batch
        self._pending: list[tuple[float, dict[str, Any]]] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = asyncio.Lock()  # one batch in flight: lines stay in order

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def append(self, record: dict[str, Any]) -> None:
        self._pending.append((time.time(), record))
        if len(self._pending) >= self._max_batch:
            self._full.set()

    async def _run(self) -> None:
        # Stopped by `_closing`, not by cancelling: Python 3.11's wait_for can swallow a cancellation
        # that arrives as the event is set, and the writer would never stop.
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._full.wait()
            self._full.clear()
            try:
                await self.flush()
            except OSError as exc:  # a full disk must not stop the service; the lines stay queued
                log.error("could not write records; retrying", error=repr(exc), queued=len(self._pending))

    async def flush(self) -> None:
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            data = _render(batch)
            try:
                await asyncio.to_thread(self._write, data)  # the fsync waits on the disk, not the loop
            except OSError:
                self._pending[:0] = batch
                raise

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if self._durable:
            os.fsync(self._fd)

    async def close(self) -> None:
        """Stop the background task and write everything queued."""
        self._closing = True
        self._full.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
        if self._durable:
            os.close(self._fd)


# orjson, because the writer renders on the event loop, where the standard library was a visible
# share of a cached search (docs/PERFORMANCE.md). A value of a type it lacks is written as its str().
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE


def _render(batch: list[tuple[float, dict[str, Any]]]) -> bytes:
    stamped = ({**record, "timestamp": dt.datetime.fromtimestamp(at, dt.UTC)} for at, record in batch)
    return b"".join(_line(record) for record in stamped)


def _line(record: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(record, default=str, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:  # e.g. an integer beyond 64 bits: that record alone, as text
        log.error("record not renderable as JSON; written as text", error=str(exc))
        fallback = {"timestamp": record["timestamp"], "unrenderable": repr(record)[:4096]}
        return orjson.dumps(fallback, option=_OPTIONS)
