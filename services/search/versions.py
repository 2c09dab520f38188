"""Model versions of a collection: several versions' vectors per asset, one active version per tenant.

Storage layout (both backends): the collection's first model keeps the names it always had (its
primary in the primary slot, its other named vectors under their names), so data stored before
versions existed stays valid. A later version is registered with a slot ("m2", "m3", ...) and its
vectors are stored as named vectors "<slot>__<name>" (its primary is "<slot>__semantic"). The registry
(version -> slot) lives in the collection's metadata; each tenant's state (active version, the one a
rollback returns to, the versions its assets may hold) is stored by the backend durably and atomically.

Everything here works on domain records only; the core calls it (services.search.core).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import replace

import numpy as np
from cachetools import TTLCache

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.search.backends.base import SearchBackend
from services.search.domain import (
    PRIMARY_VECTOR,
    SLOT_SEPARATOR,
    AssetRecord,
    CollectionInfo,
    ModelRef,
    ModelVectors,
    ModelVersionInfo,
    ModelVersionsView,
    TenantModels,
    storage_name,
)

# Assets read per page while counting coverage or removing a version's vectors.
SCAN_PAGE = 200


def model_sets(record: AssetRecord) -> dict[ModelRef, ModelVectors]:
    """A written record's vectors per model version (its own model's and `others`)."""
    sets = dict(record.others)
    if record.doc.embedding_model is not None and record.vector is not None:
        sets[record.doc.embedding_model] = ModelVectors(record.vector, dict(record.named))
    return sets


def decompose(info: CollectionInfo, stored: AssetRecord) -> dict[ModelRef, ModelVectors]:
    """A stored record's vectors per model version (a version counts when its primary is present)."""
    out: dict[ModelRef, ModelVectors] = {}
    if info.model is not None and stored.vector is not None:
        own = {n: v for n, v in stored.named.items() if SLOT_SEPARATOR not in n}
        out[info.model] = ModelVectors(stored.vector, own)
    for model, slot in info.versions.items():
        prefix = slot + SLOT_SEPARATOR
        mine = {n[len(prefix) :]: v for n, v in stored.named.items() if n.startswith(prefix)}
        primary = mine.pop(PRIMARY_VECTOR, None)
        if primary is not None:
            out[model] = ModelVectors(primary, mine)
    return out


def held_models(info: CollectionInfo, stored: AssetRecord) -> tuple[ModelRef, ...]:
    """The versions a stored record holds vectors of (from its vector names only)."""
    models = []
    if info.model is not None and stored.vector is not None:
        models.append(info.model)
    for model, slot in info.versions.items():
        if storage_name(slot, PRIMARY_VECTOR) in stored.named:
            models.append(model)
    return tuple(models)


def compose(info: CollectionInfo, record: AssetRecord, sets: dict[ModelRef, ModelVectors]) -> AssetRecord:
    """The storage record: the first model's vectors in their places, later versions' under slots."""
    assert info.model is not None
    first = sets.get(info.model)
    named: dict[str, np.ndarray] = {}
    if first is not None:
        named.update(first.named)
    for model, vecs in sets.items():
        slot = info.slot_of(model)
        if not slot:
            continue
        assert vecs.vector is not None
        named[storage_name(slot, PRIMARY_VECTOR)] = vecs.vector
        named.update({storage_name(slot, n): v for n, v in vecs.named.items()})
    doc = replace(record.doc, embedding_model=info.model)
    return AssetRecord(doc, first.vector if first is not None else None, named)


def describe(model: ModelRef | None) -> str:
    return "the collection's first model" if model is None else str(model)


class ModelVersions:
    """The tenant-level operations: the state, activate, rollback, remove (gc), query resolution."""

    def __init__(self, backend: SearchBackend, state_ttl_s: float, max_tenants: int) -> None:
        self.backend = backend
        # A lock lives while a write holds or awaits it (weak values: idle tenants cost nothing).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        # Another replica's activation or rollback is seen within the TTL; writes and refusals read fresh.
        self._states: TTLCache[str, TenantModels] = (
            TTLCache(max_tenants, state_ttl_s) if state_ttl_s > 0 else TTLCache(1, 1e-9)
        )

    def lock(self, tenant: str) -> asyncio.Lock:
        """Serialises a tenant's merged writes and state changes in this process."""
        lock = self._locks.get(tenant)
        if lock is None:
            lock = self._locks[tenant] = asyncio.Lock()
        return lock

    async def state(self, tenant: str, fresh: bool = False) -> TenantModels:
        cached = self._states.get(tenant)
        if cached is None or fresh:
            cached = await self.backend.load_tenant_models(tenant)
            self._states[tenant] = cached
        return cached

    async def _save(self, tenant: str, state: TenantModels) -> None:
        await self.backend.save_tenant_models(tenant, state)
        self._states[tenant] = state

    async def info(self, model: ModelRef | None = None) -> CollectionInfo:
        info = await self.backend.collection_info()
        if info.model is None or (model is not None and info.slot_of(model) is None):
            # Another replica may have recorded the first model or registered this one since.
            info = await self.backend.collection_info(refresh=True)
        return info

    def active_of(self, info: CollectionInfo, state: TenantModels) -> ModelRef | None:
        return state.active or info.model

    def holds(self, info: CollectionInfo, state: TenantModels, model: ModelRef) -> bool:
        return model == info.model or model in state.held

    # ---- queries ---------------------------------------------------------------------------------

    async def resolve(self, tenant: str, model: ModelRef | None, name: str) -> tuple[ModelRef, str]:
        """The model version a query vector is searched in (its own, or the tenant's active one when
        it names none) and the stored vector name to search."""
        info = await self.info(model)
        if info.model is None:
            raise NotFound("no asset has been stored yet, so there is nothing to search")
        state = await self.state(tenant)
        if model is not None and not self.holds(info, state, model):
            # Another replica may have registered the version or let the tenant hold it since this
            # process last read the state: read it again before refusing.
            state = await self.state(tenant, fresh=True)
        if model is None:
            model = self.active_of(info, state)
            assert model is not None
            info = await self.info(model)  # another replica may have registered it since
        slot = info.slot_of(model)
        if slot is None:
            raise FailedPrecondition(
                f"vector comes from model {model}; the collection holds "
                + ", ".join(str(m) for m in info.all_models())
                + " (embed the query with one of them)"
            )
        if not self.holds(info, state, model):
            raise FailedPrecondition(
                f"tenant '{tenant}' holds no vectors of model version {model} (re-index to it first)"
            )
        return model, storage_name(slot, name or PRIMARY_VECTOR)

    # ---- state changes ---------------------------------------------------------------------------

    async def view(self, tenant: str, coverage: bool, generation: int = 0) -> ModelVersionsView:
        info = await self.info()
        state = await self.state(tenant, fresh=True)
        counts: dict[ModelRef, int] = {}
        total = await self._count(tenant, counts if coverage else None)
        active = self.active_of(info, state)
        versions = tuple(
            ModelVersionInfo(
                m,
                self.holds(info, state, m),
                m == active,
                m == info.model,
                counts.get(m, 0),
                info.specs(m),
            )
            for m in info.all_models()
        )
        return ModelVersionsView(versions, active, state.previous, total, generation)

    async def _count(self, tenant: str, counts: dict[ModelRef, int] | None) -> int:
        """The tenant's asset count; with `counts`, how many assets hold each version (a full scan)."""
        if not await self.backend.tenant_exists(tenant):
            return 0
        if counts is None:
            return (await self.backend.stats(tenant)).asset_count
        info = await self.info()
        total, cursor = 0, ""
        while True:
            page, cursor = await self.backend.scan(tenant, cursor, SCAN_PAGE, include_vectors=False)
            total += len(page)
            for r in page:
                for m in held_models(info, r):
                    counts[m] = counts.get(m, 0) + 1
            if not cursor:
                return total

    async def add(self, tenant: str, model: ModelRef) -> None:
        _check_model(model)
        info = await self.info(model)
        if info.model is None:
            raise FailedPrecondition(
                "the collection has no model yet: its first write records it (ingest first)"
            )
        if info.slot_of(model) is None:
            info = await self.backend.register_model_version(model)
        async with self.lock(tenant):
            state = await self.state(tenant, fresh=True)
            if not self.holds(info, state, model):
                await self._save(tenant, replace(state, held=(*state.held, model)))

    async def activate(self, tenant: str, model: ModelRef) -> None:
        _check_model(model)
        info = await self.info(model)
        if info.slot_of(model) is None:
            raise NotFound(
                f"model version {model} is not registered in this collection (re-index to it first)"
            )
        async with self.lock(tenant):
            state = await self.state(tenant, fresh=True)
            if not self.holds(info, state, model):
                raise FailedPrecondition(
                    f"tenant '{tenant}' holds no vectors of {model} (re-index to it first)"
                )
            active = self.active_of(info, state)
            if model == active:
                return
            counts: dict[ModelRef, int] = {}
            total = await self._count(tenant, counts)
            missing = total - counts.get(model, 0)
            if missing > 0:
                raise FailedPrecondition(
                    f"{missing} of the tenant's {total} assets have no vectors of {model} yet; "
                    "finish the re-index before activating it"
                )
            await self._save(tenant, replace(state, active=model, previous=active))

    async def rollback(self, tenant: str) -> None:
        info = await self.info()
        async with self.lock(tenant):
            state = await self.state(tenant, fresh=True)
            previous = state.previous
            if previous is None:
                raise FailedPrecondition(f"tenant '{tenant}' has no previous model version to roll back to")
            if not self.holds(info, state, previous):
                raise FailedPrecondition(
                    f"the previous version {previous} was removed; it cannot be restored"
                )
            await self._save(tenant, replace(state, active=previous, previous=self.active_of(info, state)))

    async def retire(self, tenant: str, model: ModelRef) -> ModelRef:
        """First half of a gc: the tenant stops holding the version (so no write adds its vectors
        again) before they are removed. Returns the version."""
        _check_model(model)
        info = await self.info(model)
        if info.slot_of(model) is None:
            raise NotFound(f"model version {model} is not registered in this collection")
        if model == info.model:
            raise FailedPrecondition(
                f"{model} is the collection's first model: its vectors occupy the primary slots and "
                "cannot be removed"
            )
        async with self.lock(tenant):
            state = await self.state(tenant, fresh=True)
            if model == self.active_of(info, state):
                raise FailedPrecondition(f"{model} is the tenant's active version; activate another first")
            if model in state.held or state.previous == model:
                held = tuple(m for m in state.held if m != model)
                previous = None if state.previous == model else state.previous
                await self._save(tenant, replace(state, held=held, previous=previous))
        return model


def _check_model(model: ModelRef) -> None:
    if not model.name or not model.version:
        raise InvalidArgument("model needs a name and a version")
    if len(model.name) > 128 or len(model.version) > 128:
        raise InvalidArgument("model name and version are at most 128 characters each")
