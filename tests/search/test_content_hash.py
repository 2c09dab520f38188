"""FindByContentHash over gRPC, on both backends (embedded, and the real Weaviate with Redis)."""

from __future__ import annotations

import hashlib
import uuid

import grpc
import numpy as np
import pytest
from imagesearch.v1 import search_pb2

from tests.search.conftest import Service
from tests.search.helpers import record, unit

RNG = np.random.default_rng(14)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def find(svc: Service, tenant: str, digests: list[str]) -> list[tuple[str, list[str]]]:
    resp = svc.stub.FindByContentHash(
        search_pb2.FindByContentHashRequest(tenant=tenant, content_sha256=digests)
    )
    return [(m.content_sha256, list(m.asset_ids)) for m in resp.matches]


def upsert(svc: Service, tenant: str, *assets: tuple[str, str]) -> None:
    recs = [record(aid, unit(RNG), content_sha256=digest) for aid, digest in assets]
    resp = svc.stub.UpsertAssets(search_pb2.UpsertAssetsRequest(tenant=tenant, assets=recs))
    assert not any(r.HasField("error") for r in resp.results), resp


def test_answers_each_hash_in_request_order_with_sorted_ids(search_service: Service) -> None:
    t = f"t{uuid.uuid4().hex[:10]}"
    same, other, absent = sha(b"same bytes"), sha(b"other bytes"), sha(b"never stored")
    upsert(search_service, t, ("zz-copy", same), ("aa-original", same), ("m-other", other), ("none", ""))
    assert find(search_service, t, [absent, same, other, same]) == [
        (absent, []),
        (same, ["aa-original", "zz-copy"]),
        (other, ["m-other"]),
        (same, ["aa-original", "zz-copy"]),
    ]


def test_another_tenants_identical_hash_is_not_returned(search_service: Service) -> None:
    mine, theirs = f"t{uuid.uuid4().hex[:10]}", f"t{uuid.uuid4().hex[:10]}"
    digest = sha(b"shared picture")
    upsert(search_service, mine, ("mine-1", digest))
    upsert(search_service, theirs, ("theirs-1", digest), ("theirs-2", digest))
    assert find(search_service, mine, [digest]) == [(digest, ["mine-1"])]
    # A tenant with no assets yet has no matches (duplicate detection asks before the first upsert).
    assert find(search_service, f"t{uuid.uuid4().hex[:10]}", [digest]) == [(digest, [])]


def test_a_deleted_or_rehashed_asset_is_no_longer_returned(search_service: Service) -> None:
    t = f"t{uuid.uuid4().hex[:10]}"
    first, second = sha(b"v1"), sha(b"v2")
    upsert(search_service, t, ("keep", first), ("gone", first), ("moved", first))
    assert find(search_service, t, [first]) == [(first, ["gone", "keep", "moved"])]
    search_service.stub.DeleteAssets(search_pb2.DeleteAssetsRequest(tenant=t, asset_ids=["gone"]))
    upsert(search_service, t, ("moved", second))  # replaced with other bytes
    assert find(search_service, t, [first, second]) == [(first, ["keep"]), (second, ["moved"])]


@pytest.mark.parametrize(
    ("digests", "index"),
    [
        (["ab" * 32, "AB" * 32], 1),  # uppercase
        (["ab" * 31], 0),  # too short
        (["ab" * 32, "ab" * 32, "ab" * 32 + "0"], 2),  # too long
        (["zz" * 32], 0),  # not hex
        (["ab" * 32, ""], 1),  # empty
    ],
    ids=["uppercase", "short", "long", "not-hex", "empty"],
)
def test_a_bad_digest_is_invalid_argument_naming_its_index(
    search_service: Service, digests: list[str], index: int
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        find(search_service, "tenant-x", digests)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"content_sha256[{index}]" in err.value.details() and "64 lowercase hex" in err.value.details()


def test_batch_limits_and_bad_tenant(search_service: Service) -> None:
    inv = grpc.StatusCode.INVALID_ARGUMENT
    for tenant, digests in (("tenant-x", []), ("tenant-x", ["ab" * 32] * 1001), ("bad/tenant", ["ab" * 32])):
        with pytest.raises(grpc.RpcError) as err:
            find(search_service, tenant, digests)
        assert err.value.code() == inv, err.value.details()
