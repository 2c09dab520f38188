"""How many vectors a usearch graph cannot reach, by how it was built (usearch alone, no service).

    python -m bench.graph_orphans                                # the cases docs/SEARCH.md quotes
    python -m bench.graph_orphans --cases 5000x12/5000 --builds serial

Each case `NxD/B` adds N random unit vectors of dimension D in batches of B to a graph with the
embedded backend's defaults (cosine, int8, M 16, efConstruction 64), then searches every vector for
itself at ef 1000 and counts those not in their own top 10: nodes no search reaches. Builds:

- concurrent: usearch's `add` on every core (what the embedded backend did before; USearch#735);
- serial: `add` on one thread (what it does now);
- repair: concurrent, then each batch's vectors searched for themselves at the default ef (64) and the
  ones not found removed and added again serially (tried, not kept; docs/SEARCH.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from usearch.index import Index

BUILDS = ("concurrent", "serial", "repair")


def build(vectors: np.ndarray, batch: int, how: str) -> tuple[Index, float, int]:
    """The graph, its build time in seconds, and how many vectors the repair re-added."""
    keys = np.arange(len(vectors), dtype=np.uint64)
    graph = Index(ndim=vectors.shape[1], metric="cos", dtype="i8", connectivity=16, expansion_add=64)
    graph.expansion_search = 64  # type: ignore[misc]
    readded = 0
    start = time.perf_counter()
    for first in range(0, len(vectors), batch):
        k, v = keys[first : first + batch], vectors[first : first + batch]
        graph.add(k, v, threads=1 if how == "serial" else 0)
        if how == "repair":
            lost = k[graph.search(v, 1).keys[:, 0] != k]
            if len(lost):
                readded += len(lost)
                graph.remove(lost)
                graph.add(lost, vectors[lost.astype(np.int64)], threads=1)
    return graph, time.perf_counter() - start, readded


def unreachable(graph: Index, vectors: np.ndarray) -> int:
    graph.expansion_search = 1000  # type: ignore[misc]
    top = graph.search(vectors, 10).keys
    return sum(1 for i in range(len(vectors)) if i not in top[i])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=["20000x384/64", "20000x384/1000", "5000x12/1000"])
    parser.add_argument("--builds", nargs="+", choices=BUILDS, default=list(BUILDS))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'case':>16} {'build':>11} {'seconds':>8} {'re-added':>8} {'unreachable':>11}")
    for case in args.cases:
        shape, batch = case.split("/")
        n, dim = (int(x) for x in shape.split("x"))
        vectors = rng.standard_normal((n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        for how in args.builds:
            graph, seconds, readded = build(vectors, int(batch), how)
            print(
                f"{case:>16} {how:>11} {seconds:>8.2f} {readded:>8} {unreachable(graph, vectors):>11}",
                flush=True,
            )


if __name__ == "__main__":
    main()
