"""The embedded SearchBackend: one TenantIndex per tenant under `data_dir/tenants/<tenant>/`, the
collection's model in `data_dir/collection.json`; queries run both legs and fuse them with Weaviate's
rules (services.search.fusion)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.files import write_json_durably
from services.search.backends.embedded import ranking
from services.search.backends.embedded.columns import tokenize
from services.search.backends.embedded.tenant import HnswParams, TenantIndex
from services.search.domain import (
    PRIMARY_VECTOR,
    AssetRecord,
    CollectionInfo,
    Fusion,
    Hit,
    ItemFailure,
    ModelRef,
    PendingAsset,
    QueryPlan,
    Scores,
    Stats,
    TenantModels,
)
from services.search.fusion import content_terms, coverage, fuse, keyword_texts

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_VECTOR = np.zeros(0, dtype=np.float32)


class EmbeddedBackend:
    """In-process backend: one TenantIndex per tenant under `data_dir/tenants/<tenant>/`."""

    name = "embedded"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        hnsw: HnswParams,
        expected_model: ModelRef | None = None,
        expected_dimension: int = 0,
    ) -> None:
        self.root = Path(data_dir)
        self.hnsw = hnsw
        self._expected = (expected_model, expected_dimension)
        self._tenants: dict[str, TenantIndex] = {}
        self._open_lock = asyncio.Lock()
        self._info = CollectionInfo(None, 0)

    async def start(self) -> None:
        (self.root / "tenants").mkdir(parents=True, exist_ok=True)
        meta = self.root / "collection.json"
        if meta.exists():
            d = json.loads(meta.read_text())
            self._info = CollectionInfo(
                ModelRef(d["model"]["name"], d["model"]["version"]),
                int(d["dimension"]),
                {str(n): int(dim) for n, dim in d.get("named", {}).items()},
                {ModelRef(v["name"], v["version"]): str(v["slot"]) for v in d.get("versions", [])},
            )
        model, dim = self._expected
        if model is not None and dim and self._info.model is None:
            await self.set_collection_model(model, dim)

    async def close(self) -> None:
        tenants, self._tenants = self._tenants, {}
        for t in tenants.values():
            await asyncio.to_thread(t.close)

    async def ready(self) -> bool:
        return (self.root / "tenants").is_dir()

    async def collection_info(self, refresh: bool = False) -> CollectionInfo:
        return self._info  # one process owns the directory: nothing else records a model

    async def set_collection_model(self, model: ModelRef, dimension: int) -> CollectionInfo:
        if self._info.model is None:
            self._save_info(CollectionInfo(model, dimension))
        return self._info

    async def add_named_vectors(self, dimensions: dict[str, int]) -> CollectionInfo:
        new = {n: d for n, d in dimensions.items() if n not in self._info.named}
        if new:
            self._save_info(replace(self._info, named={**self._info.named, **new}))
            for t in self._tenants.values():
                async with t.write_lock:
                    for name, dim in new.items():
                        t.add_space(name, dim)
        return self._info

    async def register_model_version(self, model: ModelRef) -> CollectionInfo:
        if self._info.slot_of(model) is None:
            slot = f"m{len(self._info.versions) + 2}"
            self._save_info(replace(self._info, versions={**self._info.versions, model: slot}))
        return self._info

    def _save_info(self, info: CollectionInfo) -> None:
        """collection.json: the model, the primary's dimension, the other named vectors' ones (a file
        written before named vectors has no "named": such a collection simply has none yet) and the
        later model versions with their slots."""
        assert info.model is not None
        write_json_durably(
            self.root / "collection.json",
            {
                "model": {"name": info.model.name, "version": info.model.version},
                "dimension": info.dimension,
                "named": info.named,
                "versions": [
                    {"name": m.name, "version": m.version, "slot": slot} for m, slot in info.versions.items()
                ],
            },
        )
        self._info = info

    async def load_tenant_models(self, tenant: str) -> TenantModels:
        path = self._tenant_dir(tenant) / "models.json"
        if not path.exists():
            return TenantModels()
        return TenantModels.from_json(json.loads(path.read_text()))

    async def save_tenant_models(self, tenant: str, state: TenantModels) -> None:
        """The tenant's active pointer: written to a temporary file, fsynced, renamed over models.json
        and the directory fsynced, so a crash leaves the old or the new state, never a torn one."""
        self._tenant_dir(tenant).mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(write_json_durably, self._tenant_dir(tenant) / "models.json", state.to_json())

    async def scan(
        self, tenant: str, after: str, limit: int, include_vectors: bool
    ) -> tuple[list[AssetRecord], str]:
        t = await self._tenant(tenant)
        ids = sorted(a for a in t.slot_of if a > after)[:limit]
        records = [r for r in await self.get(tenant, ids, include_vectors) if r is not None]
        if not include_vectors:
            for r in records:  # which named vectors each holds (the core derives its models from them)
                slot = t.slot_of.get(r.doc.asset_id)
                r.vector = _NO_VECTOR  # every asset holds the primary
                r.named = {
                    n: _NO_VECTOR
                    for n, sp in t.named.items()
                    if slot is not None and slot < len(sp.has) and sp.has[slot]
                }
        return records, (ids[-1] if len(ids) == limit else "")

    def _tenant_dir(self, tenant: str) -> Path:
        return self.root / "tenants" / tenant

    async def tenant_exists(self, tenant: str) -> bool:
        return tenant in self._tenants or (self._tenant_dir(tenant) / "records.sqlite").exists()

    async def _tenant(self, tenant: str, create: bool = False) -> TenantIndex:
        t = self._tenants.get(tenant)
        if t is not None:
            return t
        async with self._open_lock:
            t = self._tenants.get(tenant)
            if t is not None:
                return t
            if not create and not await self.tenant_exists(tenant):
                raise NotFound(f"tenant '{tenant}' has no assets (it is created by its first upsert)")
            if not self._info.dimension:
                raise FailedPrecondition("the collection has no embedding model yet (no asset was written)")
            t = await asyncio.to_thread(
                TenantIndex, self._tenant_dir(tenant), self._info.dimension, self.hnsw, self._info.named
            )
            self._tenants[tenant] = t
            return t

    async def upsert(self, tenant: str, records: list[AssetRecord]) -> list[ItemFailure | None]:
        t = await self._tenant(tenant, create=True)
        async with t.write_lock:
            placed, retired = await asyncio.to_thread(t.write_blocking, records, [])
            t.apply(placed, retired)
        return [None] * len(records)

    async def delete(self, tenant: str, asset_ids: list[str]) -> list[bool]:
        t = await self._tenant(tenant)
        async with t.write_lock:
            existed = [a in t.slot_of for a in asset_ids]
            present = [a for a, e in zip(asset_ids, existed, strict=True) if e]
            if present:
                placed, retired = await asyncio.to_thread(t.write_blocking, [], present)
                t.apply(placed, retired)
        return existed

    async def get(self, tenant: str, asset_ids: list[str], include_vectors: bool) -> list[AssetRecord | None]:
        t = await self._tenant(tenant)
        out: list[AssetRecord | None] = []
        for a in asset_ids:
            slot = t.slot_of.get(a)
            if slot is None:
                out.append(None)
            else:
                vec = t.vectors[slot].copy() if include_vectors else None
                named = (
                    {n: sp.vectors[slot].copy() for n, sp in t.named.items() if sp.has[slot]}
                    if include_vectors
                    else {}
                )
                out.append(AssetRecord(t.docs[slot], vec, named))
        return out

    async def find_by_content_hash(self, tenant: str, digests: list[str]) -> dict[str, set[str]]:
        t = await self._tenant(tenant)
        slots_by_digest = t.columns.values["content_sha256"]
        found: dict[str, set[str]] = {}
        for d in digests:
            ids = {t.docs[slot].asset_id for slot in slots_by_digest.get(d, ()) if slot in t.docs}
            if ids:
                found[d] = ids
        return found

    async def assets_in_state(self, tenant: str | None, state: str, limit: int) -> list[PendingAsset]:
        if tenant is not None:
            names = [tenant]
        else:
            tdir = self.root / "tenants"
            listed = sorted(os.listdir(tdir)) if tdir.exists() else []
            names = [n for n in listed if await self.tenant_exists(n)]
        out: list[PendingAsset] = []
        for name in names:
            if len(out) >= limit:
                break
            t = await self._tenant(name)
            docs = [t.docs[s] for s in t.columns.values["analysis_state"].get(state, ()) if s in t.docs]
            docs.sort(key=lambda d: (d.updated_at or _EPOCH, d.asset_id))
            room = limit - len(out)
            out += [PendingAsset(name, d.asset_id, d.content_sha256, d.updated_at) for d in docs[:room]]
        return out

    async def query(self, tenant: str, plan: QueryPlan) -> list[Hit]:
        t = await self._tenant(tenant)
        if plan.vector is not None:
            space_of_name = t.named.get(plan.vector_name)
            dim = t.dim if plan.vector_name == PRIMARY_VECTOR else (space_of_name.dim if space_of_name else 0)
            if not dim:
                raise InvalidArgument(f"vector name {plan.vector_name!r} is not stored in this collection")
            if len(plan.vector) != dim:
                raise InvalidArgument(
                    f"query vector has dimension {len(plan.vector)}; the collection's is {dim}"
                )
        allowed = t.columns.mask(plan.filter)
        n_allowed = int(allowed.sum())
        kw: list[tuple[int, float]] = []
        vec: list[tuple[int, float]] = []
        if plan.uses_keyword:
            kw = ranking.keyword_leg(
                t, tokenize(plan.text), plan.keyword_fields, allowed, n_allowed, plan.window
            )
        if plan.uses_vector:
            assert plan.vector is not None
            vec = ranking.vector_leg(t, plan.vector_name, plan.vector, allowed, n_allowed, plan.window)
        coverages: dict[int, float] = {}
        if plan.fusion is Fusion.ADAPTIVE and kw:
            terms = content_terms(plan.text)
            coverages = {
                slot: coverage(terms, keyword_texts(t.docs[slot], plan.keyword_fields))
                for slot, _ in kw
                if slot in t.docs
            }
        fused = fuse(kw, vec, plan.alpha, plan.fusion, coverages, plan.strength_exponent)[
            plan.offset : plan.offset + plan.limit
        ]
        space = t.named.get(plan.vector_name)

        def stored_vector(slot: int) -> np.ndarray | None:
            """The hit's stored vector of the searched name (None: the asset has none of that name)."""
            if space is None:
                return t.vectors[slot]
            return space.vectors[slot] if slot < len(space.has) and space.has[slot] else None

        hits = []
        for f in fused:
            slot = int(f.key)  # type: ignore[call-overload]
            doc = t.docs.get(slot)
            if doc is None:  # retired while we ranked
                continue
            stored = stored_vector(slot)
            cos = f.cosine
            if cos is None and plan.vector is not None and stored is not None:
                cos = float(stored @ plan.vector)
            scores = Scores(
                f.fused,
                f.keyword,
                f.vector,
                f.bm25,
                0.0 if cos is None or math.isnan(cos) else cos,
                vector_weight=f.vector_weight,
            )
            hits.append(
                Hit(doc, scores, stored.copy() if plan.include_vectors and stored is not None else None)
            )
        return hits

    async def stats(self, tenant: str | None) -> Stats:
        info = self._info
        if tenant is not None:
            t = await self._tenant(tenant)
            return Stats(t.columns.live, info.model, info.dimension)
        total = 0
        tdir = self.root / "tenants"
        for name in sorted(os.listdir(tdir)) if tdir.exists() else []:
            if name in self._tenants:
                total += self._tenants[name].columns.live
            elif (tdir / name / "records.sqlite").exists():
                with contextlib.closing(sqlite3.connect(tdir / name / "records.sqlite")) as db:
                    total += int(db.execute("SELECT COUNT(*) FROM assets").fetchone()[0])
        return Stats(total, info.model, info.dimension)
