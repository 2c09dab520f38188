"""The console's page flows over the gateway client: each returns what its page shows (no HTTP, no gRPC)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator, Iterable

from services.console.domain import (
    BackendHealth,
    Click,
    ConsoleError,
    IngestItemOutcome,
    SearchQuery,
    StatusView,
    Upload,
)
from services.console.gateway_client import BACKENDS, GatewayClient


def _probe_query() -> SearchQuery:
    """The status page's probe: a one-result text search shows degraded reasons and the served model. Its
    text is new each time: the gateway's caches of query vectors and pages cannot answer for the encoder."""
    return SearchQuery(text=f"status probe {secrets.token_hex(4)}", page_size=1)


def click_event_id(session_id: str, click_search_id: str, asset_id: str, rank: int) -> str:
    """Deterministic per (session, search, result): reopening the same result is one event, not many."""
    digest = hashlib.sha256(f"{session_id}\x00{click_search_id}\x00{asset_id}\x00{rank}".encode()).hexdigest()
    return f"console-{digest[:40]}"


class Console:
    def __init__(self, gateway: GatewayClient) -> None:
        self.gateway = gateway
        self._background: set[asyncio.Task[None]] = set()

    def record_click(self, api_key: str, click: Click) -> None:
        """Sends the click as feedback without making the asset page wait for it."""
        task = asyncio.create_task(self.gateway.record_click(api_key, click))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def ingest(self, api_key: str, uploads: Iterable[Upload]) -> AsyncIterator[IngestItemOutcome]:
        async for outcome in self.gateway.ingest(api_key, uploads):
            yield outcome

    async def status(self, api_key: str) -> StatusView:
        states = await asyncio.gather(
            self.gateway.health(""), *(self.gateway.health(f"backend:{b}") for b in BACKENDS)
        )
        gateway = BackendHealth("gateway", states[0])
        backends = tuple(BackendHealth(name, state) for name, state in zip(BACKENDS, states[1:], strict=True))
        try:
            probe = await self.gateway.search(api_key, _probe_query())
        except ConsoleError as exc:
            return StatusView(gateway, backends, probe_error=f"{exc.status}: {exc.message}")
        return StatusView(gateway, backends, degraded_reasons=probe.degraded_reasons, model=probe.model)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await self.gateway.close()
