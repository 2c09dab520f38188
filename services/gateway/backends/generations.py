"""The tenants' index generations, learned by a push (WatchIndexGenerations) so that a page-cache hit
needs no round trip to the search service.

A generation is answered from memory only when it was learned under the live watch: read (with
GetIndexGeneration) after the watch's first message said it is registered, or pushed by it, or
returned by one of this gateway's own writes. Under that watch every later write is pushed, so the
value stays current. Whenever the stream ends (search restarted, its Redis lost, a bump failed, the
renewal below) everything learned is forgotten and generations are read per request again until the
next watch is registered: a push that may have been missed never lets a page from before a write be
served. This gateway's own writes update the value before they are acknowledged, so a search after
an acknowledged ingest or delete through this gateway never sees the page from before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import structlog
from cachetools import LRUCache
from imagesearch.v1 import search_pb2, search_pb2_grpc

log = structlog.get_logger("backends")

GenerationRead = Callable[[str], Awaitable[int | None]]


class GenerationWatch:
    def __init__(
        self,
        stub: search_pb2_grpc.SearchServiceStub,
        read: GenerationRead,  # GetIndexGeneration: None when it cannot be trusted or asked
        max_tenants: int,
        renew_s: float,
        retry_s: float,
    ) -> None:
        self._stub = stub
        self._read = read
        self._known: LRUCache[str, int] = LRUCache(max_tenants)
        self._renew_s = renew_s
        self._retry_s = retry_s
        self._live = False
        # Bumped whenever a watch starts or ends: a read begun under another watch is not kept.
        self._epoch = 0

    @property
    def live(self) -> bool:
        return self._live

    async def generation(self, tenant: str) -> int | None:
        if self._live:
            known = self._known.get(tenant)
            if known is not None:
                return known
        epoch, live = self._epoch, self._live
        generation = await self._read(tenant)
        if generation is not None and live and self._live and epoch == self._epoch:
            return self._learn(tenant, generation)
        return generation

    def wrote(self, tenant: str, generation: int) -> None:
        """A write of this gateway returned the tenant's generation (0: its bump failed)."""
        if generation <= 0:
            self._known.pop(tenant, None)  # read again: the search service says it is inconsistent
        elif self._live:
            self._learn(tenant, generation)

    def _learn(self, tenant: str, generation: int) -> int:
        # Generations only grow within one watch (a search restart that resets them ends the watch),
        # so a read that raced a push keeps the pushed value.
        known = max(generation, self._known.get(tenant, generation))
        self._known[tenant] = known
        return known

    def _forget(self) -> None:
        self._live = False
        self._epoch += 1
        self._known.clear()

    async def run(self) -> None:
        """Watch for the gateway's lifetime: renewed every `renew_s`, re-opened `retry_s` after a loss."""
        while True:
            renewed = False
            try:
                await self._follow()
            except asyncio.CancelledError:
                self._forget()
                raise
            except grpc.aio.AioRpcError as exc:
                renewed = self._live and exc.code() is grpc.StatusCode.DEADLINE_EXCEEDED
                if not renewed:
                    log.info("generation watch lost; reading generations per request", code=exc.code().name)
            except Exception as exc:  # whatever broke it, nothing learned under it may be trusted
                log.warning("generation watch failed; reading generations per request", error=repr(exc))
            self._forget()
            if not renewed:
                await asyncio.sleep(self._retry_s)

    async def _follow(self) -> None:
        call = self._stub.WatchIndexGenerations(
            search_pb2.WatchIndexGenerationsRequest(), timeout=self._renew_s
        )
        async for push in call:
            if push.subscribed:
                self._forget()
                self._live = True
            elif self._live:
                self._learn(push.tenant, push.index_generation)
