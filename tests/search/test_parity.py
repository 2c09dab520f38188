"""Ranking parity: one corpus and one query set on both backends (embedded and the real Weaviate);
the top-10 lists must agree. Prints the mean top-10 overlap per query mode."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator

import numpy as np
import pytest

from devstack import StackInfo
from devstack.weaviate import weaviate_api_key
from services.search import filters as flt
from services.search.backends import make_backend
from services.search.cache import NoCache
from services.search.core import SearchCore
from services.search.domain import AssetDoc, AssetRecord, Fusion, ModelRef
from services.search.settings import SearchSettings

N_DOCS = 3000
DIM = 64
MODEL = ModelRef("parity-model", "1")
WORDS = [f"w{i}" for i in range(400)]


def corpus(rng: np.random.Generator) -> list[AssetRecord]:
    """Clustered vectors (like real embeddings) and Zipf-distributed caption words (few BM25 ties)."""
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    probs = 1.0 / np.arange(1, len(WORDS) + 1)
    probs /= probs.sum()
    recs = []
    for i in range(N_DOCS):
        v = centres[i % 40] + 0.6 * rng.standard_normal(DIM).astype(np.float32)
        n_words = int(rng.integers(3, 15))
        caption = " ".join(rng.choice(WORDS, size=n_words, p=probs))
        tags = tuple(rng.choice(WORDS[:60], size=int(rng.integers(0, 4)), replace=False))
        doc = AssetDoc(
            asset_id=f"p{i}", caption=caption, tags=tags, width=int(rng.integers(50, 4000)),
            owner=f"owner{i % 5}", embedding_model=MODEL,
        )  # fmt: skip
        recs.append(AssetRecord(doc, v / np.linalg.norm(v)))
    return recs


async def open_core(settings: SearchSettings) -> SearchCore:
    backend = make_backend(settings)
    await backend.start()
    return SearchCore(settings, backend, NoCache())


@pytest.fixture
async def cores(
    search_stack: StackInfo, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[SearchCore, SearchCore, list[AssetRecord]]]:
    recs = corpus(np.random.default_rng(5))
    embedded = await open_core(SearchSettings(data_dir=str(tmp_path_factory.mktemp("parity"))))
    weaviate = await open_core(
        SearchSettings(
            backend="weaviate",
            weaviate_host=search_stack.host,
            weaviate_http_port=search_stack.weaviate_http_port or 0,
            weaviate_grpc_port=search_stack.weaviate_grpc_port or 0,
            weaviate_api_key=weaviate_api_key(),  # type: ignore[arg-type]
            weaviate_collection=f"Parity{uuid.uuid4().hex[:10]}",
        )
    )
    for core in (embedded, weaviate):
        for start in range(0, N_DOCS, 1000):
            batch = [AssetRecord(r.doc, r.vector.copy()) for r in recs[start : start + 1000]]  # type: ignore[union-attr]
            summary = await core.upsert("parity", batch)
            assert all(o.error is None for o in summary.outcomes)
    try:
        yield embedded, weaviate, recs
    finally:
        await embedded.backend.close()
        client = weaviate.backend._client  # type: ignore[attr-defined]
        await client.collections.delete(weaviate.backend._name)  # type: ignore[attr-defined]
        # Not closed: here the Weaviate client is the process's last grpc.aio object (no server runs in
        # this test), and its async close then joins grpc's aio poller thread from the event loop and
        # never returns (seen since the adaptive modes joined this test; cause not found yet). The
        # services close it under their gRPC server and do not hang; process exit releases it here.


@pytest.mark.integration
async def test_backends_rank_alike(cores: tuple[SearchCore, SearchCore, list[AssetRecord]]) -> None:
    embedded, weaviate, recs = cores
    rng = np.random.default_rng(9)
    wide = flt.condition("width", flt.Op.GREATER_THAN, flt.TypedValue("int_value", 1000), None)
    narrow = flt.all_of(
        [wide, flt.condition("owner", flt.Op.IN, None, [flt.TypedValue("string_value", "owner1")])]
    )
    overlaps: dict[str, list[float]] = defaultdict(list)
    for qi in range(24):
        target = recs[int(rng.integers(0, N_DOCS))]
        q = target.vector + 0.3 * rng.standard_normal(DIM).astype(np.float32)  # type: ignore[operator]
        text = " ".join(target.doc.caption.split()[:3])
        modes = {
            "hybrid-relative": dict(text=text, vector=q, alpha=0.5, fusion=Fusion.RELATIVE_SCORE),
            "hybrid-ranked": dict(text=text, vector=q, alpha=0.5, fusion=Fusion.RANKED),
            "hybrid-adaptive": dict(text=text, vector=q, alpha=0.5, fusion=Fusion.ADAPTIVE),
            "adaptive-filtered": dict(
                text=text, vector=q, alpha=0.5, fusion=Fusion.ADAPTIVE, filter=narrow if qi % 2 else wide
            ),
            "vector": dict(text="", vector=q, alpha=1.0, fusion=Fusion.RELATIVE_SCORE),
            "keyword": dict(text=text, vector=None, alpha=0.0, fusion=Fusion.RELATIVE_SCORE),
            "hybrid-filtered": dict(
                text=text,
                vector=q,
                alpha=0.75,
                fusion=Fusion.RELATIVE_SCORE,
                filter=narrow if qi % 2 else wide,
            ),
        }
        for mode, kw in modes.items():
            lists = []
            for core in (embedded, weaviate):
                vec = kw["vector"]
                plan = await core.plan(
                    text=kw["text"], vector=vec, vector_model=MODEL if vec is not None else None,
                    alpha=kw["alpha"], fusion=kw["fusion"], filter=kw.get("filter"), limit=10, offset=0,
                    window=0, keyword_fields=[], include_vectors=False,
                )  # type: ignore[arg-type]  # fmt: skip
                lists.append([h.doc.asset_id for h in (await core.query("parity", plan)).hits])
            assert len(lists[0]) == len(lists[1])
            overlaps[mode].append(len(set(lists[0]) & set(lists[1])) / max(1, len(lists[0])))
    report = {mode: round(float(np.mean(v)), 3) for mode, v in overlaps.items()}
    print(f"\nparity top-10 overlap (mean over {len(overlaps['vector'])} queries per mode): {report}")
    for mode, mean in report.items():
        assert mean >= 0.9, (mode, report)
