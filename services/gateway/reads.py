"""The read layer both flows share: query, get by id, and "may this caller see it".

An empty tenant or store is "nothing found", not an error: the search service answers NOT_FOUND for a
tenant with nothing stored yet, and a search or an ingest lookup there simply finds nothing.
"""

from __future__ import annotations

from services.common.errors import NotFound
from services.gateway.auth import Principal
from services.gateway.backends.base import SearchClient
from services.gateway.domain import QueryResult, QuerySpec, StoredAsset
from services.gateway.policy import Policy, Visibility


class Reads:
    def __init__(self, search: SearchClient, policy: Policy) -> None:
        self._search = search
        self._policy = policy

    async def query(self, spec: QuerySpec) -> QueryResult:
        try:
            return await self._search.query(spec)
        except NotFound:  # nothing stored yet (in the tenant or at all)
            return QueryResult([])

    async def get(
        self, tenant: str, asset_ids: list[str], include_vectors: bool, include_unanalysed: bool = False
    ) -> list[StoredAsset]:
        """Assets by id. `include_unanalysed`: also those whose analysis is not done (the ingest flow's
        own lookups only; nothing read with it may be shown to a caller)."""
        try:
            found, _missing = await self._search.get_assets(
                tenant, asset_ids, include_vectors, include_unanalysed
            )
        except NotFound:  # the tenant has no assets yet
            return []
        return found

    async def visible_asset(
        self, principal: Principal, action: str, vis: Visibility, asset_id: str, include_vector: bool = False
    ) -> StoredAsset:
        """The asset if `vis` admits it; NOT_FOUND when it is absent or invisible (the same answer: the
        caller must not learn that an invisible asset exists)."""
        found = await self.get(principal.tenant, [asset_id], include_vector)
        stored = next((s for s in found if s.asset.asset_id == asset_id), None)
        if stored is None:
            raise NotFound(f"asset {asset_id!r} not found in tenant {principal.tenant!r}")
        why = self._policy.denial(vis, stored.asset)
        if why is not None:
            self._policy.audit.record(principal, action, "deny", why, asset_id=asset_id)
            raise NotFound(f"asset {asset_id!r} not found in tenant {principal.tenant!r}")
        return stored
