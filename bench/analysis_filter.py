"""What the search service's analysis-state condition costs a query (issue 19 part 4).

Every query now carries `NOT analysis_state IN (failed, pending)` (SearchCore.query: unanalysed assets
are never hits). This times the same queries on one backend with and without that condition, in the same
run, interleaved query by query, straight on the backend (no gRPC, no cache):

    python -m bench.analysis_filter --n 5000 --queries 200 --pending 0.02   # embedded backend

(Weaviate is not measured here: a run against the devstack Weaviate did not finish within 10 minutes
on 2026-12-07 and was not investigated.)

`--n` assets of random unit vectors with captions from a small vocabulary, a share `--pending` of them
pending; queries are hybrid (relative-score fusion, window 100) and vector-only, random.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from services.search.domain import (
    ANALYSIS_HIDDEN,
    ANALYSIS_PENDING,
    AssetDoc,
    AssetRecord,
    Fusion,
    ModelRef,
    QueryPlan,
)
from services.search.filters import analysed_only

MODEL = ModelRef("bench", "1")
DIM = 256
WORDS = "red blue green car boat tree house dog cat bird river hill road city sea sky".split()


async def make_backend(tmp: Path) -> Any:
    from services.search.backends.embedded import EmbeddedBackend, HnswParams

    backend = EmbeddedBackend(tmp, HnswParams(32, 128, 64, 2000, "i8"))
    await backend.start()
    await backend.set_collection_model(MODEL, DIM)
    return backend


def plan(text: str, vector: np.ndarray | None, alpha: float, visible_only: bool) -> QueryPlan:
    return QueryPlan(
        text=text,
        vector=vector,
        alpha=alpha,
        fusion=Fusion.RELATIVE_SCORE,
        filter=analysed_only(None, ANALYSIS_HIDDEN) if visible_only else None,
        limit=10,
        offset=0,
        window=100,
        keyword_fields=(("caption", 2.0), ("tags", 1.5), ("ocr_text", 1.0)),
        include_vectors=True,
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-analysis-filter-"))
    backend = await make_backend(tmp)
    try:
        records = []
        for i in range(args.n):
            v = rng.standard_normal(DIM).astype(np.float32)
            caption = " ".join(rng.choice(WORDS, 4))
            state = ANALYSIS_PENDING if rng.random() < args.pending else "analysed"
            doc = AssetDoc(f"a{i}", caption=caption, embedding_model=MODEL, analysis_state=state)
            records.append(AssetRecord(doc, v / np.linalg.norm(v)))
        for i in range(0, len(records), 500):
            assert all(e is None for e in await backend.upsert("t", records[i : i + 500]))
        samples: dict[str, list[float]] = {}
        for _ in range(args.queries):
            v = rng.standard_normal(DIM).astype(np.float32)
            v /= np.linalg.norm(v)
            text = " ".join(rng.choice(WORDS, 2))
            for kind, (t, vec, alpha) in {"hybrid": (text, v, 0.75), "vector": ("", v, 1.0)}.items():
                for visible in (False, True):
                    start = time.perf_counter()
                    await backend.query("t", plan(t, vec, alpha, visible))
                    name = f"{kind}, {'with' if visible else 'without'} the condition"
                    samples.setdefault(name, []).append((time.perf_counter() - start) * 1000)
        out: dict[str, Any] = {"backend": backend.name, "n": args.n, "pending": args.pending}
        for name, ms in samples.items():
            out[name] = {"p50_ms": float(np.percentile(ms, 50)), "mean_ms": float(np.mean(ms)), "n": len(ms)}
        return out
    finally:
        await backend.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--pending", type=float, default=0.02, help="share of assets pending")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    r = asyncio.run(run(args))
    print(f"\n== analysis-state condition ({r['backend']}, {r['n']} assets, {r['pending']:.0%} pending) ==")
    for kind in ("hybrid", "vector"):
        a, b = r[f"{kind}, without the condition"], r[f"{kind}, with the condition"]
        print(
            f"{kind:<7} p50 {a['p50_ms']:.2f} -> {b['p50_ms']:.2f} ms ({b['p50_ms'] / a['p50_ms']:.2f}x), "
            f"mean {a['mean_ms']:.2f} -> {b['mean_ms']:.2f} ms ({b['mean_ms'] / a['mean_ms']:.2f}x)"
        )
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
