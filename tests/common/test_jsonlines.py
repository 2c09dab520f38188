"""JsonLinesWriter: records queued by append reach the file in order, in batches, and all of them on
close (what the gateway's audit trail relies on)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

from services.common.jsonlines import JsonLinesWriter


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_records_are_written_in_batches_in_order_and_flushed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = JsonLinesWriter(str(path), flush_interval_s=0.02, max_batch=4)
    writer.start()
    for i in range(3):
        writer.append({"n": i, "why": "line\nbreak"})
    assert not path.read_text()  # queued: the caller paid for a list append only
    for _ in range(500):  # written within the flush interval, each batch fsynced (slow on a busy disk)
        await asyncio.sleep(0.01)
        if len(_lines(path)) >= 3:
            break
    assert [r["n"] for r in _lines(path)] == [0, 1, 2]
    for i in range(3, 10):
        writer.append({"n": i})
    await writer.close()  # whatever is still queued is written before close returns
    records = _lines(path)
    assert [r["n"] for r in records] == list(range(10))
    assert records[0]["why"] == "line\nbreak" and "timestamp" in records[0]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


async def test_a_full_batch_is_written_before_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = JsonLinesWriter(str(path), flush_interval_s=5.0, max_batch=2)
    writer.start()
    writer.append({"n": 0})
    writer.append({"n": 1})
    for _ in range(100):
        await asyncio.sleep(0.01)
        if path.read_text():
            break
    assert [r["n"] for r in _lines(path)] == [0, 1]
    await writer.close()


async def test_a_record_json_cannot_hold_is_written_as_text_without_losing_the_others(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = JsonLinesWriter(str(path), flush_interval_s=5.0)
    writer.start()
    writer.append({"n": 0, "at": dt.datetime(2026, 12, 7, 18, 0, tzinfo=dt.UTC), "ids": {1, 2} - {1, 2}})
    writer.append({"n": 1, "too_big": 1 << 70})  # beyond what JSON numbers hold in 64 bits
    writer.append({"n": 2})
    await writer.close()
    records = _lines(path)
    assert [r.get("n") for r in records] == [0, None, 2]
    assert records[0]["at"] == "2026-12-07T18:00:00+00:00" and records[0]["ids"] == "set()"
    assert "'too_big': 1180591620717411303424" in str(records[1]["unrenderable"])
    assert "timestamp" in records[1]
