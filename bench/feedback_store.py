"""Throughput of the gateway's feedback stores: searches recorded and events put per second.

    python -m bench.feedback_store [--seconds 3] [--concurrency 8] [--redis-url URL]

For each backend (SQLite in a temporary directory; Redis when --redis-url is given, e.g. the local
stack's from `make stack-info`), runs `concurrency` asyncio tasks for `seconds` each phase:
1. record_searches of one record (what a search showing a page not shown before costs), 2. put of
fresh click events (insert + counters), 3. put of already-stored event ids (the duplicate path).
Prints ops/s and the ratio to SQLite's in the same run. Keys go under a fresh prefix; the Redis keys
are left behind (a few MB), a bench's trace.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.gateway.backends.feedback import FeedbackStore
from services.gateway.backends.feedback.redis import RedisFeedbackStore
from services.gateway.backends.feedback.sqlite import SqliteFeedbackStore
from services.gateway.domain import FeedbackKind, SearchRecord, StoredFeedback

RANKS = {f"asset-{i}": i + 1 for i in range(20)}


async def _rate(seconds: float, concurrency: int, op: Callable[[int, int], Awaitable[object]]) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            await op(w, i)
            i += 1
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return done / (time.perf_counter() - t0)


async def measure(store: FeedbackStore, seconds: float, concurrency: int) -> dict[str, float]:
    run = uuid.uuid4().hex[:8]
    now = dt.datetime.now(dt.UTC)
    searches: list[str] = []

    async def record(w: int, i: int) -> None:
        sid = f"{run}-{w}-{i}"
        await store.record_searches(
            [SearchRecord(sid, "bench", "bench/arm", RANKS)], 3600.0, {"bench/arm": 1}
        )
        searches.append(sid)

    def event(w: int, i: int) -> StoredFeedback:
        sid = searches[(w * 7919 + i) % len(searches)]
        return StoredFeedback(
            "bench", f"{run}-e{w}-{i}", FeedbackKind.CLICK, sid, "asset-1", "bench/arm", 2, 0, 0, now
        )

    async def put(w: int, i: int) -> None:
        await store.put(event(w, i), 3600.0)

    async def duplicate(w: int, i: int) -> None:
        await store.put(event(w, i % 100), 3600.0)

    return {
        "record_search/s": await _rate(seconds, concurrency, record),
        "put new/s": await _rate(seconds, concurrency, put),
        "put duplicate/s": await _rate(seconds, concurrency, duplicate),
    }


async def main_async(args: argparse.Namespace) -> None:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteFeedbackStore(Path(tmp) / "feedback.sqlite3")
        try:
            results["sqlite"] = await measure(sqlite, args.seconds, args.concurrency)
        finally:
            await sqlite.close()
    if args.redis_url:
        redis = RedisFeedbackStore(args.redis_url, f"bench-feedback:{uuid.uuid4().hex}:", 1.0)
        try:
            results["redis"] = await measure(redis, args.seconds, args.concurrency)
        finally:
            await redis.close()
    base = results["sqlite"]
    print(f"feedback stores, {args.concurrency} concurrent tasks, {args.seconds:g} s per phase")
    print(f"{'backend':<8} {'operation':<16} {'ops/s':>10} {'vs sqlite':>10}")
    for backend, figures in results.items():
        for name, value in figures.items():
            print(f"{backend:<8} {name:<16} {value:>10.0f} {value / base[name]:>9.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--redis-url", default="", help="also measure the Redis store (e.g. the stack's)")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
