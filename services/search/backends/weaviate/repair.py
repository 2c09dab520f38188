"""Verify-and-repair of Weaviate's vector index after Weaviate restarts.

Why: Weaviate 1.39's batch write acknowledges before its HNSW commit-log records reach the OS (it
flushes before its insert workers finish), so after a kill -9 it can come back with objects that its
object store holds but its HNSW graph lost; no startup pass of Weaviate's puts them back
(its own repair, `RepairIndex`, runs only with ASYNC_INDEXING, which acknowledges before indexing).
Such an object is returned by filters and BM25 but never by vector search, and re-sending it does
not help: Weaviate skips the vector index when an update leaves the vector unchanged.

What: a watcher notices every new Weaviate lifetime (the Raft term of a one-node cluster grows with
every start) and then checks every stored object of every active tenant: each named vector it has
must be found by a near-vector query restricted to the object's id (for a short id list Weaviate
searches the graph's own node list, so a node the graph lost is not found). Objects that fail are
deleted and inserted again, which gives them a new internal id and a fresh graph node. See
docs/DURABILITY.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import structlog
import weaviate
import weaviate.classes as wvc
from weaviate.classes.init import AdditionalConfig, Timeout
from weaviate.classes.query import Filter
from weaviate.classes.tenants import TenantActivityStatus

from services.search.backends.weaviate.backend import api_key_auth

log = structlog.get_logger("search.weaviate.repair")


@dataclass
class RepairReport:
    """What one pass found: objects checked, the ids (uuids) that were unfindable, and those re-inserted."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)

    def add(self, other: RepairReport) -> None:
        self.checked += other.checked
        self.missing += other.missing
        self.repaired += other.repaired


def raft_lifetime(statistics: dict[str, Any]) -> str | None:
    """A token that changes whenever the node restarts: its Raft term and its first applied index.

    A one-node cluster elects itself on every start, which increments the term."""
    for node in statistics.get("statistics") or []:
        raft = node.get("raft") or {}
        if "term" in raft:
            return f"{node.get('name')}:{raft['term']}:{node.get('initialLastAppliedIndex')}"
    return None


class VectorIndexRepairer:
    """Checks and repairs one collection, over its own client (independent of the serving one)."""

    def __init__(
        self,
        host: str,
        http_port: int,
        grpc_port: int,
        collection: str,
        chunk: int,
        timeout_s: float,
        api_key: str | None = None,
    ) -> None:
        self._host, self._http_port, self._grpc_port = host, http_port, grpc_port
        self._api_key = api_key
        self._collection = collection
        self._chunk = chunk
        self._timeout_s = timeout_s
        self._client: weaviate.WeaviateAsyncClient | None = None

    async def _connected(self) -> weaviate.WeaviateAsyncClient:
        if self._client is None:
            t = max(1, int(self._timeout_s))
            self._client = weaviate.use_async_with_custom(
                http_host=self._host,
                http_port=self._http_port,
                http_secure=False,
                grpc_host=self._host,
                grpc_port=self._grpc_port,
                grpc_secure=False,
                auth_credentials=api_key_auth(self._api_key),
                additional_config=AdditionalConfig(timeout=Timeout(init=t, query=t, insert=t)),
                skip_init_checks=True,
            )
        if not self._client.is_connected():
            await self._client.connect()
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def lifetime(self) -> str | None:
        """The current Weaviate lifetime token, or None while Weaviate does not answer."""
        url = f"http://{self._host}:{self._http_port}/v1/cluster/statistics"
        try:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            async with httpx.AsyncClient(timeout=self._timeout_s) as http:
                resp = await http.get(url, headers=headers)
            if resp.status_code != 200:
                return None
            return raft_lifetime(resp.json())
        except (httpx.HTTPError, ValueError):
            return None

    async def repair_all(self) -> RepairReport:
        """Check every active tenant of the collection; a missing collection has nothing to repair."""
        client = await self._connected()
        if not await client.collections.exists(self._collection):
            return RepairReport()
        col = client.collections.get(self._collection)
        tenants = await col.tenants.get()
        report = RepairReport()
        for name, tenant in sorted(tenants.items()):
            if tenant.activity_status != TenantActivityStatus.ACTIVE:
                continue  # an offloaded or cold tenant is not searchable anyway; checked once it is active
            report.add(await self.repair_tenant(name))
        return report

    async def repair_tenant(self, tenant: str) -> RepairReport:
        client = await self._connected()
        col = client.collections.get(self._collection).with_tenant(tenant)
        report = RepairReport()
        after: Any = None
        while True:
            page = await col.query.fetch_objects(limit=self._chunk, after=after, include_vector=True)
            if not page.objects:
                return report
            after = page.objects[-1].uuid
            report.checked += len(page.objects)
            missing = await self._unfindable(col, page.objects)
            if missing:
                report.missing += [str(o.uuid) for o in missing]
                report.repaired += await self._reinsert(col, [o.uuid for o in missing])
                log.warning(
                    "re-indexed objects the vector index had lost",
                    tenant=tenant,
                    count=len(missing),
                    collection=self._collection,
                )

    async def _unfindable(self, col: Any, objects: Sequence[Any]) -> list[Any]:
        """The objects some of whose vectors a near-vector query restricted to their ids does not find."""
        by_name: dict[str, list[Any]] = {}
        for o in objects:
            for name in (o.vector or {}).keys():
                by_name.setdefault(name, []).append(o)
        bad: dict[str, Any] = {}
        for name, objs in by_name.items():
            ids = [o.uuid for o in objs]
            res = await col.query.near_vector(
                near_vector=objs[0].vector[name],
                target_vector=name,
                filters=Filter.by_id().contains_any(ids),
                limit=len(ids),
            )
            found = {str(o.uuid) for o in res.objects}
            for o in objs:
                if str(o.uuid) not in found:
                    bad[str(o.uuid)] = o
        return list(bad.values())

    async def _reinsert(self, col: Any, ids: Sequence[Any]) -> list[str]:
        """Delete and insert again (an update with an unchanged vector would keep the lost graph node);
        the ids re-inserted.

        The objects are read again first and checked once more, so that a client write or delete
        since the page was read wins: a deleted asset is not brought back, one re-written with a new
        vector is findable already, and the one left is written back as it is now."""
        res = await col.query.fetch_objects(
            filters=Filter.by_id().contains_any(list(ids)), limit=len(ids), include_vector=True
        )
        objects = await self._unfindable(col, res.objects)
        if not objects:
            return []
        await col.data.delete_many(where=Filter.by_id().contains_any([o.uuid for o in objects]))
        result = await col.data.insert_many(
            [wvc.data.DataObject(properties=o.properties, vector=o.vector, uuid=o.uuid) for o in objects]
        )
        if result.errors:
            first = next(iter(result.errors.values()))
            raise RuntimeError(f"re-insert of {len(result.errors)} objects failed: {first.message}")
        return [str(o.uuid) for o in objects]

    async def watch(self, interval_s: float) -> None:
        """Run a full pass at start and after each Weaviate restart; retry a failed pass every interval."""
        verified: str | None = None
        while True:
            try:
                current = await self.lifetime()
                if current is not None and current != verified:
                    report = await self.repair_all()
                    verified = current
                    log.info(
                        "vector index verified",
                        weaviate_lifetime=current,
                        checked=report.checked,
                        repaired=len(report.repaired),
                    )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Weaviate went away mid-pass: the next interval tries again
                log.warning("vector index check failed; retrying", error=str(exc))
            await asyncio.sleep(interval_s)
