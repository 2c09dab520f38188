"""The gateway's side of packed candidate vectors (services.gateway.convert): one decode per window."""

from __future__ import annotations

import numpy as np
import pytest
from imagesearch.v1 import common_pb2, search_pb2

from services.gateway import convert
from services.gateway.backends.errors import BackendError
from services.gateway.domain import QuerySpec


def _response(vectors: list[np.ndarray | None], encoding: int, dtype: str) -> search_pb2.QueryResponse:
    dim = next(len(v) for v in vectors if v is not None)
    matrix = np.zeros((len(vectors), dim), dtype=dtype)
    for i, v in enumerate(vectors):
        if v is not None:
            matrix[i] = v
    return search_pb2.QueryResponse(
        hits=[search_pb2.QueryHit(asset=common_pb2.Asset(asset_id=f"a{i}")) for i in range(len(vectors))],
        packed_vectors=search_pb2.PackedVectors(
            encoding=encoding,  # type: ignore[arg-type]
            dimension=dim,
            values=matrix.tobytes(),
            missing_rows=[i for i, v in enumerate(vectors) if v is None],
        ),
    )


@pytest.mark.parametrize(
    ("encoding", "dtype", "atol"),
    [(search_pb2.VECTOR_ENCODING_FLOAT32, "<f4", 0.0), (search_pb2.VECTOR_ENCODING_FLOAT16, "<f2", 1e-3)],
)
def test_packed_rows_become_the_hits_vectors(encoding: int, dtype: str, atol: float) -> None:
    rng = np.random.default_rng(5)
    vecs: list[np.ndarray | None] = [rng.standard_normal(8).astype(np.float32) for _ in range(5)]
    vecs = [v / np.linalg.norm(v) for v in vecs]  # type: ignore[operator]
    vecs[3] = None  # no stored vector of the searched name
    result = convert.query_result(_response(vecs, encoding, dtype))
    assert [h.asset.asset_id for h in result.hits] == [f"a{i}" for i in range(5)]
    for h, v in zip(result.hits, vecs, strict=True):
        if v is None:
            assert h.vector is None
        else:
            assert h.vector is not None and h.vector.dtype == np.float32
            np.testing.assert_allclose(h.vector, v, atol=atol, rtol=0)


def test_a_packed_matrix_that_does_not_fit_the_hits_is_a_backend_error() -> None:
    resp = _response([np.ones(4, dtype=np.float32)] * 3, search_pb2.VECTOR_ENCODING_FLOAT16, "<f2")
    resp.packed_vectors.dimension = 5
    with pytest.raises(BackendError) as err:
        convert.query_result(resp)
    assert err.value.public == "the search service returned malformed candidate vectors"


def test_only_queries_asking_for_vectors_ask_for_them_packed() -> None:
    with_vectors = convert.query_request(QuerySpec("acme", text="x", include_vectors=True), 2)
    assert with_vectors.packed_vector_encoding == search_pb2.VECTOR_ENCODING_FLOAT16
    without = convert.query_request(QuerySpec("acme", text="x"), 2)
    assert without.packed_vector_encoding == search_pb2.VECTOR_ENCODING_UNSPECIFIED
