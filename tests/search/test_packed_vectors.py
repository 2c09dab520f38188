"""Packed candidate vectors (QueryRequest.packed_vector_encoding) on both backends: the same vectors as
the per-hit embeddings, in one matrix, float32 exactly and float16 within its precision."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
from imagesearch.v1 import search_pb2

from tests.search.conftest import Service
from tests.search.helpers import embedding, record, unit

RNG = np.random.default_rng(23)


@pytest.fixture(scope="module")
def window(search_service: Service) -> tuple[str, dict[str, np.ndarray]]:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    vecs = {f"a{i}": unit(RNG) for i in range(40)}
    resp = search_service.stub.UpsertAssets(
        search_pb2.UpsertAssetsRequest(
            tenant=tenant, assets=[record(a, v, caption="boat") for a, v in vecs.items()]
        )
    )
    assert not any(r.HasField("error") for r in resp.results)
    return tenant, vecs


def _query(svc: Service, tenant: str, q: np.ndarray, packed: int) -> search_pb2.QueryResponse:
    return svc.stub.Query(
        search_pb2.QueryRequest(
            tenant=tenant,
            text="boat",
            vector=embedding(q),
            limit=30,
            include_vectors=True,
            packed_vector_encoding=packed,  # type: ignore[arg-type]
        )
    )


@pytest.mark.parametrize(
    ("packed", "dtype", "tolerance"),
    [(search_pb2.VECTOR_ENCODING_FLOAT32, "<f4", 0.0), (search_pb2.VECTOR_ENCODING_FLOAT16, "<f2", 1e-3)],
    ids=["float32", "float16"],
)
def test_packed_vectors_are_the_hits_vectors_in_hit_order(
    search_service: Service,
    window: tuple[str, dict[str, np.ndarray]],
    packed: int,
    dtype: str,
    tolerance: float,
) -> None:
    tenant, vecs = window
    q = unit(RNG)
    per_hit = _query(search_service, tenant, q, search_pb2.VECTOR_ENCODING_UNSPECIFIED)
    resp = _query(search_service, tenant, q, packed)
    assert [h.asset.asset_id for h in resp.hits] == [h.asset.asset_id for h in per_hit.hits]
    assert len(resp.hits) == 30 and not any(h.HasField("image_embedding") for h in resp.hits)
    p = resp.packed_vectors
    assert p.encoding == packed and p.dimension == 16 and list(p.missing_rows) == []
    assert len(p.values) == 30 * 16 * np.dtype(dtype).itemsize  # float16: half the bytes
    matrix = np.frombuffer(p.values, dtype=dtype).astype(np.float32).reshape(30, 16)
    # The per-hit float32 embeddings (the stored, re-normalised vectors); and what was sent.
    want = np.stack([np.frombuffer(h.image_embedding.values, dtype="<f4") for h in per_hit.hits])
    sent = np.stack([vecs[h.asset.asset_id] for h in resp.hits])
    np.testing.assert_allclose(want, sent, atol=1e-6)
    np.testing.assert_allclose(matrix, want, atol=tolerance, rtol=0)
    cos = matrix @ q
    np.testing.assert_allclose(cos, want @ q, atol=2 * tolerance + 1e-6)


def test_an_unknown_encoding_is_refused(
    search_service: Service, window: tuple[str, dict[str, np.ndarray]]
) -> None:
    tenant, _ = window
    with pytest.raises(grpc.RpcError) as err:
        _query(search_service, tenant, unit(RNG), 7)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "packed_vector_encoding 7 is not a VectorEncoding" in (err.value.details() or "")
