"""Finished result pages, kept per gateway process and served only while still exact.

A page is keyed by everything that shaped it (the page-token binding, which covers the caller's
visibility and every query input, plus the offset) and tagged with the tenant's index generation it
was computed at: a hit skips the encoder, the first stage and the rerank, but is served only while
the generation is unchanged (no write landed since), and policy is re-checked on every hit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import structlog
from cachetools import LRUCache, TTLCache

from services.gateway.auth import Principal
from services.gateway.backends.base import SearchClient
from services.gateway.domain import Asset, SearchPage
from services.gateway.policy import Policy, Visibility

log = structlog.get_logger("search")


@dataclass(frozen=True)
class PageRequest:
    """Who asks for which page of which query: what every search mode shares past validation."""

    principal: Principal
    action: str
    vis: Visibility
    bound: str  # the page-token binding: every input that shapes the result (also the cache key)
    offset: int
    page_size: int
    disable_rerank: bool
    # A page personalised by the caller's preference boost is that caller's (preferences.personal_key):
    # it is cached apart, but its page tokens stay valid when the caller's clicks change.
    personal: str = ""
    # The model version whose vectors the page compared ("name:version"; "" when the gateway knows
    # of none): after an activation the old version's pages are not served, and its tokens stay valid.
    model: str = ""

    @property
    def cache_key(self) -> tuple[str, int, str, str]:
        return (self.bound, self.offset, self.personal, self.model)


@dataclass
class _Entry:
    generation: int
    page: SearchPage  # as served on a hit (cached), the same object every time: its rendering is kept
    source: Asset | None  # "more like this": the asset the page was computed from


class PageCache:
    def __init__(
        self,
        entries: int,
        ttl_s: float,
        search: SearchClient,  # asked for the tenant's index generation
        policy: Policy,
        max_tenants: int,
    ) -> None:
        self.enabled = entries > 0
        self._pages: TTLCache[tuple[str, int, str, str], _Entry] = TTLCache(max(1, entries), ttl_s)
        self._search = search
        self._policy = policy
        # Per tenant, the highest generation seen (bounded: a tenant dropped here only loses the
        # "went backwards" check until its next search).
        self._highest_generation: LRUCache[str, int] = LRUCache(max_tenants)

    async def lookup(self, ask: PageRequest) -> tuple[SearchPage | None, int | None]:
        """(a cached page still valid, or None; the tenant's generation to store a new page at, or
        None when pages must not be cached now)."""
        if not self.enabled:
            return None, None
        tenant = ask.principal.tenant
        generation = await self._search.index_generation(tenant)
        if generation is None:
            return None, None
        if generation < self._highest_generation.get(tenant, 0):
            # Generations went backwards: the shared cache was reset, so an old generation number
            # may come round again with different data. Forget every page.
            log.warning("index generation went backwards; page cache cleared", tenant=tenant)
            self._pages.clear()
        self._highest_generation[tenant] = generation
        entry = self._pages.get(ask.cache_key)
        if entry is None or entry.generation != generation:
            return None, generation
        if not self._still_visible(ask, entry):
            return None, generation
        return entry.page, generation

    def _still_visible(self, ask: PageRequest, entry: _Entry) -> bool:
        # A licence may have expired since the page was computed; for "more like this" the source
        # asset too (an invisible source is NOT_FOUND, cached or not).
        if entry.source is not None and self._policy.denial(ask.vis, entry.source) is not None:
            return False
        results = entry.page.results
        admitted = self._policy.screen(ask.principal, ask.action, ask.vis, [r.asset for r in results])
        return len(admitted) == len(results)

    def keep(self, ask: PageRequest, generation: int | None, page: SearchPage, source: Asset | None) -> None:
        # Degraded pages (encoder down: keyword-only) must not outlive the outage.
        if generation is not None and not page.degraded and self.enabled:
            self._pages[ask.cache_key] = _Entry(generation, replace(page, cached=True, rendered={}), source)
