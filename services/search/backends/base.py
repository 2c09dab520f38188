"""The index backend interface: one small Protocol, two adapters (Weaviate and the embedded default).

Backends receive validated input only (the core checks tenants, ids, vectors and models first); they
report per-item store failures as `ItemFailure`s and raise `services.common.errors` for whole-call
failures (Unavailable when the store cannot be reached, NotFound for an unknown tenant).
"""

from __future__ import annotations

from typing import Protocol

from services.search.domain import (
    AssetRecord,
    CollectionInfo,
    Hit,
    ItemFailure,
    ModelRef,
    PendingAsset,
    QueryPlan,
    Stats,
    TenantModels,
)


class SearchBackend(Protocol):
    name: str

    async def start(self) -> None:
        """Connect / open the store and make sure the collection exists."""

    async def close(self) -> None: ...

    async def ready(self) -> bool:
        """True when the store answers (readiness probe)."""

    async def collection_info(self, refresh: bool = False) -> CollectionInfo:
        """The collection's model and vector dimensions (None / 0 before the first write); `refresh`
        re-reads what another replica may have recorded since."""

    async def set_collection_model(self, model: ModelRef, dimension: int) -> CollectionInfo:
        """Record the collection's model on the first write; returns what is recorded afterwards
        (which may be another writer's model if it won the race)."""

    async def add_named_vectors(self, dimensions: dict[str, int]) -> CollectionInfo:
        """Record named vectors not stored yet (name -> dimension; names already recorded keep theirs)
        and make them writable and searchable; returns what is recorded afterwards."""

    async def register_model_version(self, model: ModelRef) -> CollectionInfo:
        """Give a later model version a slot (its vectors are stored under "<slot>__<name>"); a version
        already registered keeps its slot. Returns what is recorded afterwards."""

    async def load_tenant_models(self, tenant: str) -> TenantModels:
        """The tenant's model-version state as stored (the default state when none was stored)."""

    async def save_tenant_models(self, tenant: str, state: TenantModels) -> None:
        """Store the tenant's model-version state durably and atomically (old or new, never torn)."""

    async def scan(
        self, tenant: str, after: str, limit: int, include_vectors: bool
    ) -> tuple[list[AssetRecord], str]:
        """Up to `limit` of the tenant's assets after the cursor `after` ("" = from the start) in a
        stable order, and the next cursor ("" after the last page). Each record's `named` keys say
        which named vectors it holds (their values are empty unless include_vectors)."""

    async def tenant_exists(self, tenant: str) -> bool: ...

    async def upsert(self, tenant: str, records: list[AssetRecord]) -> list[ItemFailure | None]:
        """Write records (creating the tenant if needed); one result per record, None = stored.
        Returns only after the store confirmed each write."""

    async def delete(self, tenant: str, asset_ids: list[str]) -> list[bool]:
        """Delete by id; True where the asset existed."""

    async def get(self, tenant: str, asset_ids: list[str], include_vectors: bool) -> list[AssetRecord | None]:
        """Fetch by id, in order; None where missing."""

    async def find_by_content_hash(self, tenant: str, digests: list[str]) -> dict[str, set[str]]:
        """{digest: ids of the tenant's assets storing it} for the digests that have any, read from the
        store; an unknown tenant has none."""

    async def assets_in_state(self, tenant: str | None, state: str, limit: int) -> list[PendingAsset]:
        """Up to `limit` assets whose analysis_state is `state`, of one tenant (None: every tenant),
        least recently written first within a tenant."""

    async def query(self, tenant: str, plan: QueryPlan) -> list[Hit]:
        """Run a hybrid query; returns the fused hits [offset, offset + limit)."""

    async def stats(self, tenant: str | None) -> Stats: ...
