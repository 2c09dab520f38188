"""Pure logic of bench/compression.py: ground truth, recall, the synthetic data, which configs share an
import. The Weaviate part is the benchmark itself (docs/SCALING.md)."""

from __future__ import annotations

import numpy as np

from bench.compression import (
    MixtureSpec,
    dataset,
    exact_top_k,
    held_out,
    import_groups,
    queries_for,
    recall_at_k,
)


def test_exact_top_k_matches_a_full_sort_across_blocks() -> None:
    spec = MixtureSpec(dim=16, clusters=5, spread=1.0, seed=3)
    data = dataset(spec, 250_000)  # more than one 100k block, so the merge across blocks is exercised
    queries = queries_for(spec, 7)
    found = exact_top_k(data, queries, k=10)
    expected = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    for row, want in zip(found, expected, strict=True):
        assert set(row.tolist()) == set(want.tolist())


def test_recall_counts_shared_ids_per_query() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k([[4, 3, 2, 1], [5, 6, 7, 8]], truth) == 1.0
    assert recall_at_k([[1, 2, 9, 9], [8, 0, 0, 0]], truth) == 3 / 8
    assert recall_at_k([[], []], truth) == 0.0


def test_synthetic_vectors_are_unit_and_reproducible() -> None:
    spec = MixtureSpec(dim=32, clusters=10, spread=1.0, seed=1)
    first = dataset(spec, 1_000)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, dataset(spec, 1_000))
    # Queries are drawn apart from the data (another seed), from the same mixture.
    assert not np.array_equal(queries_for(spec, 10), first[:10])


def test_pq_shares_the_uncompressed_import_when_both_are_measured() -> None:
    assert import_groups(["none", "rq8", "pq", "bq"]) == [["none", "pq"], ["rq8"], ["bq"]]
    assert import_groups(["pq", "rq8"]) == [["rq8"], ["pq"]]
    assert import_groups(["bq"]) == [["bq"]]


def test_held_out_queries_leave_the_indexed_set() -> None:
    vectors = np.arange(40, dtype=np.float32).reshape(20, 2)
    data, queries = held_out(vectors, 5, seed=0)
    assert len(data) == 15 and len(queries) == 5
    indexed = {tuple(v) for v in data.tolist()}
    assert not any(tuple(q) in indexed for q in queries.tolist())
