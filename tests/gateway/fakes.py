"""Plain in-memory fakes of the gateway's backend protocols (EncoderClient, SearchClient, Analyzer).

They implement the contract's observable behaviour (filters, hybrid scoring, per-tenant storage) in
the simplest way, so the core tests exercise the gateway's own logic. Real services are exercised by
the end-to-end tests.
"""

from __future__ import annotations

import copy
import datetime as dt
import fnmatch
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, PngImagePlugin

from services.common.errors import InvalidArgument, NotFound
from services.gateway.analysis import Analysis
from services.gateway.backends.errors import BackendUnavailable
from services.gateway.domain import (
    AllOf,
    AnalysisState,
    AnyOf,
    Asset,
    Condition,
    Encoded,
    EncodedBatch,
    FirstStageScores,
    Hit,
    ModelRef,
    Not,
    Op,
    PendingAnalysis,
    QueryResult,
    QuerySpec,
    SafetyLabel,
    StoredAsset,
    TenantModels,
    UpsertOutcome,
    UpsertRecord,
    Vector,
)

MODEL = ModelRef("fake-clip", "1")
DIM = 16
VISUAL_DIM = 24


def unit(v: np.ndarray) -> Vector:
    v = np.asarray(v, dtype=np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def concept(name: str) -> Vector:
    """A deterministic unit vector per concept word."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    return unit(np.random.default_rng(seed).normal(size=DIM))


def png(words: str, color: tuple[int, int, int] = (200, 200, 200), size: int = 32) -> bytes:
    """A real PNG whose `concepts` text chunk tells FakeEncoder what it depicts."""
    img = Image.new("RGB", (size, size), color)
    info = PngImagePlugin.PngInfo()
    info.add_text("concepts", words)
    buf = io.BytesIO()
    img.save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _concepts(data: bytes) -> str | None:
    try:
        img = Image.open(io.BytesIO(data))
        return str(img.text["concepts"])  # type: ignore[attr-defined]
    except Exception:
        return None


def visual(words: str) -> Vector:
    """The fake two-vector model's "visual" vector of an image with these concepts (VISUAL_DIM)."""
    return unit(sum(_visual_concept(w) for w in words.split()))


def _visual_concept(name: str) -> Vector:
    seed = int.from_bytes(hashlib.sha256(f"visual {name}".encode()).digest()[:4], "little")
    return unit(np.random.default_rng(seed).normal(size=VISUAL_DIM))


class FakeEncoder:
    """Texts and images map to the mean of their concept vectors (an image's concepts are in its
    PNG `concepts` text chunk, see `png`); other bytes fail that item with INVALID_ARGUMENT.

    `two_vectors=True` is a two-vector model: images also get a "visual" vector (see `visual`)."""

    def __init__(self, two_vectors: bool = False) -> None:
        self.two_vectors = two_vectors
        self.available = True
        self.text_calls = 0
        self.image_calls: list[int] = []  # batch sizes

    def _vec(self, words: Sequence[str]) -> Vector:
        return unit(sum(concept(w) for w in words))

    async def encode_texts(self, texts: Sequence[str]) -> EncodedBatch:
        if not self.available:
            raise BackendUnavailable("encoder", "unavailable: connection refused")
        self.text_calls += 1
        return EncodedBatch(MODEL, [Encoded(self._vec(t.lower().split())) for t in texts])

    async def encode_images(self, images: Sequence[bytes]) -> EncodedBatch:
        if not self.available:
            raise BackendUnavailable("encoder", "unavailable: connection refused")
        self.image_calls.append(len(images))
        items = []
        for data in images:
            words = _concepts(data)
            if words is not None:
                named = {"visual": visual(words)} if self.two_vectors else {}
                items.append(Encoded(self._vec(words.split()), named=named))
            else:
                items.append(Encoded(None, 3, "not an image"))
        return EncodedBatch(MODEL, items)

    async def ready(self) -> bool:
        return self.available


def _get(asset: Asset, name: str) -> object:
    if name == "license_name":
        return asset.license_name
    if name == "license_expires_at":
        return asset.license_expires_at
    if name == "safety_labels":
        return [s.label for s in asset.safety_labels]
    return getattr(asset, name)


def matches(f: object, asset: Asset) -> bool:
    if f is None:
        return True
    if isinstance(f, AllOf):
        return all(matches(x, asset) for x in f.filters)
    if isinstance(f, AnyOf):
        return any(matches(x, asset) for x in f.filters)
    if isinstance(f, Not):
        return not matches(f.filter, asset)
    assert isinstance(f, Condition)
    v = _get(asset, f.field)
    op, x = f.op, f.value
    if op is Op.IS_NULL:
        return (v is None or v == "") == x
    if op is Op.EQUAL:
        return v == x
    if op is Op.NOT_EQUAL:
        return v != x
    if op is Op.IN:
        return v in x  # type: ignore[operator]
    if op is Op.CONTAINS_ANY:
        return bool(set(v) & set(x))  # type: ignore[call-overload, arg-type]
    if op is Op.CONTAINS_ALL:
        return set(x) <= set(v)  # type: ignore[call-overload, arg-type]
    if op is Op.LIKE:
        return fnmatch.fnmatchcase(str(v), str(x))
    if v is None:
        return False
    return {
        Op.GREATER_THAN: lambda: v > x,  # type: ignore[operator]
        Op.GREATER_THAN_OR_EQUAL: lambda: v >= x,  # type: ignore[operator]
        Op.LESS_THAN: lambda: v < x,  # type: ignore[operator]
        Op.LESS_THAN_OR_EQUAL: lambda: v <= x,  # type: ignore[operator]
    }[op]()


@dataclass
class Stored:
    asset: Asset
    vector: Vector
    named: dict[str, Vector] = field(default_factory=dict)


@dataclass
class FakeSearch:
    """Per-tenant store; hybrid score = alpha * cosine + (1 - alpha) * keyword overlap share.

    `leaky=True` ignores filters and tenants (a broken backend): the gateway must still screen."""

    leaky: bool = False
    store: dict[tuple[str, str], Stored] = field(default_factory=dict)
    queries: list[QuerySpec] = field(default_factory=list)
    upsert_batches: list[int] = field(default_factory=list)
    fail_upsert_ids: set[str] = field(default_factory=set)
    hash_lookups: list[int] = field(default_factory=list)  # digests per FindByContentHash call
    generation: int = 0

    def put(self, asset: Asset, vector: Vector, named: dict[str, Vector] | None = None) -> None:
        self.store[(asset.tenant, asset.asset_id)] = Stored(copy.deepcopy(asset), vector, dict(named or {}))
        self.generation += 1

    async def index_generation(self, tenant: str) -> int | None:
        return self.generation

    async def model_versions(self, tenant: str, coverage: bool = False) -> TenantModels:
        # The real service says NOT_FOUND for a tenant before its first asset.
        raise NotFound("no model versions recorded for the tenant")

    async def query(self, spec: QuerySpec) -> QueryResult:
        if not spec.text and spec.vector is None:
            raise InvalidArgument("need text or vector")
        self.queries.append(spec)
        alpha = (
            spec.alpha if spec.alpha is not None else (0.75 if spec.text and spec.vector is not None else 1.0)
        )
        words = set(spec.text.lower().split())
        scored = []
        for (tenant, _), s in self.store.items():
            if not self.leaky and (tenant != spec.tenant or not matches(spec.filter, s.asset)):
                continue
            if not self.leaky and s.asset.analysis_state in _HIDDEN:  # as the search service filters
                continue
            text = " ".join([s.asset.caption, *s.asset.tags, s.asset.ocr_text]).lower().split()
            kw = len(words & set(text)) / len(words) if words else 0.0
            stored = s.vector if spec.vector_name in ("", "semantic") else s.named.get(spec.vector_name)
            if stored is None:  # the asset has no vector of that name: the vector leg cannot find it
                continue
            cos = float(stored @ spec.vector) if spec.vector is not None else 0.0
            if kw == 0 and (spec.vector is None or alpha == 0):
                continue
            fused = alpha * max(cos, 0.0) + (1 - alpha) * kw
            scored.append(
                Hit(
                    asset=copy.deepcopy(s.asset),
                    scores=FirstStageScores(
                        fused=fused,
                        keyword=(1 - alpha) * kw,
                        vector=alpha * max(cos, 0.0),
                        bm25=kw * 3,
                        cosine=cos,
                    ),
                    vector=stored.copy() if spec.include_vectors else None,
                )
            )
        scored.sort(key=lambda h: -h.scores.fused)
        return QueryResult(
            scored[spec.offset : spec.offset + spec.limit], cached=False, index_generation=self.generation
        )

    async def upsert(self, tenant: str, records: Sequence[UpsertRecord]) -> list[UpsertOutcome]:
        self.upsert_batches.append(len(records))
        out = []
        for r in records:
            if r.asset.asset_id in self.fail_upsert_ids:
                out.append(UpsertOutcome(r.asset.asset_id, 3, "rejected by the store"))
                continue
            a = copy.deepcopy(r.asset)
            a.tenant = tenant
            a.embedding_model = r.model
            self.put(a, r.vector, r.named)  # bumps the generation
            out.append(UpsertOutcome(r.asset.asset_id))
        return out

    async def get_assets(
        self,
        tenant: str,
        asset_ids: Sequence[str],
        include_vectors: bool = False,
        include_unanalysed: bool = False,
    ) -> tuple[list[StoredAsset], list[str]]:
        found, missing = [], []
        for aid in asset_ids:
            s = self.store.get((tenant, aid))
            if s is None or (s.asset.analysis_state in _HIDDEN and not include_unanalysed):
                missing.append(aid)
            else:
                found.append(
                    StoredAsset(
                        copy.deepcopy(s.asset),
                        s.vector.copy() if include_vectors else None,
                        {n: v.copy() for n, v in s.named.items()} if include_vectors else {},
                    )
                )
        return found, missing

    async def pending_analysis(self, limit: int) -> list[PendingAnalysis]:
        return [
            PendingAnalysis(t, aid, s.asset.content_sha256)
            for (t, aid), s in self.store.items()
            if s.asset.analysis_state is AnalysisState.PENDING
        ][:limit]

    async def find_by_content_hash(self, tenant: str, shas: Sequence[str]) -> dict[str, list[str]]:
        self.hash_lookups.append(len(shas))
        holders: dict[str, list[str]] = {}
        for (t, aid), s in self.store.items():
            if t == tenant and s.asset.content_sha256 in shas:
                holders.setdefault(s.asset.content_sha256, []).append(aid)
        return {sha: sorted(ids) for sha, ids in holders.items()}

    async def delete_assets(self, tenant: str, asset_ids: Sequence[str]) -> list[tuple[str, bool]]:
        self.generation += 1
        return [(aid, self.store.pop((tenant, aid), None) is not None) for aid in asset_ids]

    async def ready(self) -> bool:
        return True


_HIDDEN = (AnalysisState.PENDING, AnalysisState.FAILED)
UNSAFE_RED = (255, 0, 0)
TEXT_GREEN = (0, 255, 0)


class FakeAnalyzer:
    """Pure red images are unsafe; pure green images contain the text "exit 42"."""

    enabled = True
    executor = None  # the event loop's default executor

    def __init__(self) -> None:
        self.calls = 0

    async def analyze(self, rgb: np.ndarray) -> Analysis:
        self.calls += 1
        out = Analysis()
        pixel = tuple(int(c) for c in rgb[0, 0])
        if pixel == UNSAFE_RED:
            out.safety_labels = [SafetyLabel("FEMALE_BREAST_EXPOSED", 0.9)]
            out.safety_score = 0.9
        if pixel == TEXT_GREEN:
            out.ocr_text = "exit 42"
        return out


def asset(
    asset_id: str,
    tenant: str = "acme",
    caption: str = "",
    license_name: str = "CC-BY-4.0",
    safety: float = 0.0,
    expires: dt.datetime | None = None,
    sha: str = "",
    created: dt.datetime | None = None,
    popularity: float = 0.0,
    tags: Sequence[str] = (),
) -> Asset:
    return Asset(
        asset_id=asset_id,
        tenant=tenant,
        caption=caption,
        tags=list(tags),
        license_name=license_name,
        license_expires_at=expires,
        safety_score=safety,
        content_sha256=sha or hashlib.sha256(asset_id.encode()).hexdigest(),
        created_at=created,
        popularity=popularity,
        embedding_model=MODEL,
    )
