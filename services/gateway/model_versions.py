"""Which encoder serves which model version, and each tenant's model versions as the gateway sees them.

The search service keeps each tenant's state (the active version, the versions its assets hold:
docs/LIFECYCLE.md); the gateway reads it (GetModelVersions) and reuses it for `model_state_ttl_s`.
Queries are encoded by the encoder of the tenant's active version; ingest also writes the vectors of
every other held version that has an encoder (`model_encoders`), so an asset ingested during a
re-index is covered by both. A stale view is safe: every query vector names its version, and the
search service keeps a version's vectors until it is removed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import structlog
from cachetools import TTLCache

from services.common.errors import DomainError, InvalidArgument, NotFound, Unavailable
from services.gateway.backends.base import EncoderClient, ModelVersionsClient
from services.gateway.backends.errors import caller_safe
from services.gateway.domain import ModelRef, ModelVectors, TenantModels

log = structlog.get_logger("gateway.models")


class ModelVersions:
    def __init__(
        self,
        search: ModelVersionsClient,
        encoders: Mapping[ModelRef, EncoderClient],
        ttl_s: float,
        max_tenants: int,
    ) -> None:
        self._search = self.client = search
        self._encoders = dict(encoders)
        self._states: TTLCache[str, TenantModels] = (
            TTLCache(max_tenants, ttl_s) if ttl_s > 0 else TTLCache(1, 1e-9)
        )
        self._reading: dict[str, asyncio.Future[TenantModels | None]] = {}
        # Bumped by forget(): a read that started before a change this gateway made must not put the
        # state it read back into the cache (queries would use the old active version for a TTL).
        # One counter for all tenants: a forget costs other tenants' reads in flight their caching.
        self._epoch = 0

    @property
    def configured(self) -> bool:
        """Whether any model version has an encoder of its own (else the one encoder serves all)."""
        return bool(self._encoders)

    def encoder_of(self, model: ModelRef) -> EncoderClient | None:
        return self._encoders.get(model)

    def forget(self, tenant: str) -> None:
        """Drop the cached state (after this gateway changed it); a read in flight is not reused."""
        self._states.pop(tenant, None)
        self._reading.pop(tenant, None)
        self._epoch += 1

    async def state(self, tenant: str) -> TenantModels | None:
        """The tenant's versions (cached), None when it has no assets yet."""
        cached = self._states.get(tenant)
        if cached is not None:
            return cached
        # Single flight: a burst of ingest items or queries makes one read, and one failure (not one
        # per caller, which would open the search client's circuit at once).
        reading = self._reading.get(tenant)
        if reading is None:
            reading = self._reading[tenant] = asyncio.ensure_future(self._read(tenant))
            reading.add_done_callback(lambda done: self._read_done(tenant, done))
        return await asyncio.shield(reading)

    def _read_done(self, tenant: str, reading: asyncio.Future[TenantModels | None]) -> None:
        if self._reading.get(tenant) is reading:
            del self._reading[tenant]

    async def _read(self, tenant: str) -> TenantModels | None:
        epoch = self._epoch
        try:
            state = await self._search.model_versions(tenant)
        except NotFound:
            return None
        if self._epoch == epoch:
            self._states[tenant] = state
        return state

    async def active(self, tenant: str) -> ModelRef | None:
        """The tenant's active version (None: none recorded, or the state cannot be read now)."""
        try:
            state = await self.state(tenant)
        except DomainError as exc:  # the caller falls back to the asset's first model
            log.warning("model versions unreadable", tenant=tenant, detail=exc.message)
            return None
        return state.active if state is not None else None

    async def query_model(self, tenant: str, wanted: ModelRef | None = None) -> ModelRef | None:
        """`wanted` (a canary arm's version) when the tenant holds it, else the active version, when
        it has an encoder of its own (None: use the default encoder)."""
        if not self._encoders:
            return None
        try:
            state = await self.state(tenant)
        except DomainError as exc:  # the query still works with the default encoder's model
            log.warning("model versions unreadable; default encoder", tenant=tenant, detail=exc.message)
            return None
        if state is None:
            return None
        if wanted is not None and wanted in self._encoders and wanted in state.held():
            return wanted
        if state.active is None or state.active not in self._encoders:
            return None
        return state.active

    async def other_vectors(
        self, tenant: str, image: bytes, written: ModelRef | None
    ) -> dict[ModelRef, ModelVectors]:
        """The image's vectors of every other version the tenant holds that has an encoder here.

        Raises Unavailable when one of them cannot be encoded now: the item must not be acknowledged
        without them, or a re-index in progress would leave it uncovered."""
        if not self._encoders:
            return {}
        state = await self.state(tenant)
        if state is None:
            return {}
        targets = [m for m in state.held() if m != written and m in self._encoders]
        if not targets:
            return {}
        results = await asyncio.gather(
            *(self._encoders[m].encode_images([image]) for m in targets), return_exceptions=True
        )
        out: dict[ModelRef, ModelVectors] = {}
        for model, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, DomainError):
                    raise Unavailable(
                        f"the encoder of model version {model.name}:{model.version} (held by this tenant) is "
                        "unavailable; retry"
                    ) from result
                raise result
            item = result.items[0]
            if result.model != model:
                raise Unavailable(
                    f"the encoder configured for {model.name}:{model.version} serves another model; "
                    "fix model_encoders"
                )
            if item.vector is None:
                raise InvalidArgument(
                    f"the {model.name}:{model.version} encoder rejected the image: "
                    f"{caller_safe(item.error_message)}"
                )
            out[model] = ModelVectors(item.vector, dict(item.named))
        return out
