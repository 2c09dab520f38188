"""Index generations pushed to watchers as writes land (WatchIndexGenerations).

One `GenerationFeed` per search process. Every bump reaches it: straight from an in-process cache
("memory", "none": this process counts the generations), or, with Redis, from Redis pub/sub through
`RedisGenerationRelay` (the bump's Lua script publishes, so the bumps of every replica arrive).

A watcher is registered only while the feed is live (with Redis: while the subscription is confirmed),
and its first message says so. Whenever the feed can no longer vouch for its pushes (the subscription
was lost, a bump failed, a watcher fell behind, the service is stopping) the affected watches end, and
their callers fall back to reading generations until they have watched again: a push that may have
been missed must never leave a caller serving a page from before a write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
import structlog

from services.common.errors import Unavailable

log = structlog.get_logger("search.generations")

# A watcher that lets this many pushes pile up is dropped (it re-reads and watches again) rather than
# holding memory for a caller that does not read.
WATCH_BACKLOG = 10_000


class _Watcher:
    __slots__ = ("ended", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue(WATCH_BACKLOG)
        self.ended = ""  # why the feed ended this watch ("" while it lives)

    def end(self, why: str) -> None:
        self.ended = why
        with contextlib.suppress(asyncio.QueueFull):  # a full queue: the reader is awake anyway
            self.queue.put_nowait(None)  # wakes a reader blocked on an empty queue


class GenerationFeed:
    def __init__(self, live: bool) -> None:
        self._watchers: set[_Watcher] = set()
        self._live = asyncio.Event()
        if live:
            self._live.set()
        self._closed = False

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def set_live(self) -> None:
        if not self._closed:
            self._live.set()

    def publish(self, tenant: str, generation: int) -> None:
        for w in list(self._watchers):
            try:
                w.queue.put_nowait((tenant, generation))
            except asyncio.QueueFull:
                self._watchers.discard(w)
                w.end("the watcher fell behind")

    def interrupt(self, why: str, still_live: bool = False) -> None:
        """End every watch; with `still_live` False new ones wait until the feed is live again."""
        if not still_live:
            self._live.clear()
        watchers, self._watchers = self._watchers, set()
        if watchers:
            log.info("generation watches ended", watchers=len(watchers), why=why)
        for w in watchers:
            w.end(why)

    def close(self) -> None:
        self._closed = True
        self.interrupt("the search service is stopping")

    async def watch(self) -> AsyncIterator[tuple[str, int] | None]:
        """None once registered, then (tenant, generation) per write; raises Unavailable when the feed
        ends the watch."""
        await self._live.wait()
        watcher = _Watcher()
        self._watchers.add(watcher)
        try:
            yield None
            while True:
                item = await watcher.queue.get()
                if watcher.ended:
                    raise Unavailable(
                        f"the index generation watch ended ({watcher.ended}); read generations with "
                        "GetIndexGeneration until watching again"
                    )
                if item is not None:
                    yield item
        finally:
            self._watchers.discard(watcher)


def channel_name(prefix: str) -> str:
    """The Redis pub/sub channel the bumps of one cache key prefix are published on."""
    return f"{prefix}generations"


def decode_push(raw: bytes | str) -> tuple[str, int]:
    """A push as the bump's Lua script publishes it: "<tenant> <generation>" (tenants hold no spaces)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    tenant, generation = text.rsplit(" ", 1)
    return tenant, int(generation)


class RedisGenerationRelay:
    """Relays the bumps published on Redis into a feed, live only while subscribed."""

    def __init__(
        self, url: str, prefix: str, feed: GenerationFeed, connect_timeout_s: float, retry_after_s: float
    ) -> None:
        # Its own connection: a subscription blocks it, and it must notice a dead Redis by itself
        # (periodic PINGs) instead of waiting on a read that never returns.
        self._redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout_s, health_check_interval=1
        )
        self._channel = channel_name(prefix)
        self._feed = feed
        self._retry_after_s = retry_after_s

    async def run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("generation subscription lost", error=repr(exc))
            self._feed.interrupt("the shared cache's generation feed was lost")
            await asyncio.sleep(self._retry_after_s)

    async def _follow(self) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self._feed.set_live()
                elif message["type"] == "message":
                    self._feed.publish(*decode_push(message["data"]))

    async def close(self) -> None:
        await self._redis.aclose()
