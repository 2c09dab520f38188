"""Originals in a real object store: the S3 adapter against MinIO, and the whole suite on the real stack
(Triton, Weaviate, Redis) with the gateway's blobs in MinIO: ingest -> GetAssetImage -> delete.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from imagesearch.v1 import common_pb2, gateway_pb2
from minio import Minio
from minio.error import S3Error
from PIL import Image, ImageDraw

from devstack import REPO_ROOT, Stack, StackInfo
from services import cli
from services.gateway.backends.blobs import BlobKey
from services.gateway.backends.blobs.s3 import S3BlobStore
from services.gateway.domain import ImageVariant
from tests.gateway.suite import Suite, missing_prerequisites

ALICE = [("authorization", "Bearer acme-alice")]
GUS = [("authorization", "Bearer globex-gus")]
OUT = gateway_pb2.IngestOutcome


def _env(object_store: StackInfo) -> dict[str, str]:
    return dict(object_store.service_env)


def _client(env: dict[str, str]) -> Minio:
    return Minio(
        env["IMAGESEARCH_GATEWAY_BLOB_S3_ENDPOINT"],
        access_key=env["IMAGESEARCH_GATEWAY_BLOB_S3_ACCESS_KEY"],
        secret_key=env["IMAGESEARCH_GATEWAY_BLOB_S3_SECRET_KEY"],
        secure=False,
    )


def _exists(client: Minio, bucket: str, name: str) -> bool:
    try:
        client.stat_object(bucket, name)
    except S3Error as exc:
        if exc.code == "NoSuchKey":
            return False
        raise
    return True


def _photo(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    img = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 120))
    draw = ImageDraw.Draw(img)
    for i in range(12):
        draw.ellipse(
            (i * 40, (i * seed) % 300, i * 40 + 120, (i * seed) % 300 + 90), fill=(i * 20, 200, seed)
        )
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


# --- the adapter ----------------------------------------------------------------------------------


async def test_s3_store_round_trip(object_store: StackInfo) -> None:
    env = _env(object_store)
    store = S3BlobStore(
        env["IMAGESEARCH_GATEWAY_BLOB_S3_ENDPOINT"],
        "adapter-test",
        env["IMAGESEARCH_GATEWAY_BLOB_S3_ACCESS_KEY"],
        env["IMAGESEARCH_GATEWAY_BLOB_S3_SECRET_KEY"],
        secure=False,
        region=None,
        create_bucket=True,
        timeout_s=5.0,
    )
    data = _photo(1)
    key = BlobKey("acme", hashlib.sha256(data).hexdigest(), ImageVariant.ORIGINAL)
    try:
        assert await store.ready()
        assert await store.get(key) is None and await store.stat(key) is None
        await store.put(key, data, "image/jpeg")
        blob = await store.get(key)
        assert blob is not None and blob.data == data and blob.content_type == "image/jpeg"
        assert await store.stat(key) == len(data)
        assert _exists(_client(env), "adapter-test", f"acme/{key.sha256}/original")
        await store.delete(key)
        await store.delete(key)
        assert await store.get(key) is None
    finally:
        await store.close()


# --- the suite on the real stack ------------------------------------------------------------------


@pytest.fixture(scope="module")
def suite(stack: StackInfo, object_store: StackInfo, suite_certs: Path) -> Iterator[Suite]:
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    env = {
        **_env(object_store),
        "IMAGESEARCH_GATEWAY_BLOB_S3_BUCKET": f"e2e-{abs(hash(suite_certs)) % 10**8}",
    }
    s = Suite("stack", stack, gateway_env=env, tls_dir=suite_certs).start()
    try:
        yield s
    finally:
        s.stop()


def _ingest(stub: Any, requests: list[gateway_pb2.IngestRequest], md: Any = ALICE) -> dict[str, Any]:
    return {a.asset_id: a for a in stub.Ingest(iter(requests), metadata=md, timeout=120)}


def _request(asset_id: str, image: bytes, licence: str = "MIT") -> gateway_pb2.IngestRequest:
    return gateway_pb2.IngestRequest(
        asset_id=asset_id,
        image=image,
        caption=f"test photo {asset_id}",
        license=common_pb2.License(name=licence),
    )


def _image(stub: Any, asset_id: str, variant: int, md: Any = ALICE) -> tuple[Any, bytes]:
    messages = list(
        stub.GetAssetImage(
            gateway_pb2.GetAssetImageRequest(asset_id=asset_id, variant=variant), metadata=md, timeout=30
        )
    )
    return messages[0], b"".join(m.chunk for m in messages)


def test_ingest_then_get_asset_image_from_minio(suite: Suite) -> None:
    stub = suite.gateway_stub()
    photo = _photo(2, (1600, 1200))
    acks = _ingest(stub, [_request("photo", photo)])
    assert acks["photo"].outcome == OUT.INGEST_OUTCOME_CREATED, acks["photo"].error
    sha = hashlib.sha256(photo).hexdigest()

    first, data = _image(stub, "photo", gateway_pb2.IMAGE_VARIANT_ORIGINAL)
    assert data == photo and hashlib.sha256(data).hexdigest() == first.content_sha256 == sha
    assert (first.content_type, first.total_bytes) == ("image/jpeg", len(photo))

    first, thumb = _image(stub, "photo", gateway_pb2.IMAGE_VARIANT_THUMBNAIL)
    img = Image.open(io.BytesIO(thumb))
    assert img.format == "JPEG" and max(img.size) == 256 and first.total_bytes == len(thumb)

    env = suite.gateway_env
    client, bucket = _client(env), env["IMAGESEARCH_GATEWAY_BLOB_S3_BUCKET"]
    assert _exists(client, bucket, f"acme/{sha}/original") and _exists(
        client, bucket, f"acme/{sha}/thumbnail"
    )

    # The command-line client saves it, checked against the digest.
    assert suite.gateway is not None
    saved = suite.tmp / "saved.jpg"
    common = ["--gateway", suite.gateway.address, "--api-key", "acme-alice"]
    assert cli.main(["image", "photo", "-o", str(saved), *common]) == 0
    assert saved.read_bytes() == photo
    assert cli.main(["image", "absent", "-o", str(saved), *common]) == 2 and saved.read_bytes() == photo

    # Another tenant's asset reads exactly as an absent one.
    for asset_id, md, tenant in (("photo", GUS, "globex"), ("absent", ALICE, "acme")):
        with pytest.raises(grpc.RpcError) as err:
            _image(stub, asset_id, gateway_pb2.IMAGE_VARIANT_ORIGINAL, md)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == f"asset {asset_id!r} not found in tenant {tenant!r}"


def test_delete_keeps_content_another_asset_holds(suite: Suite) -> None:
    stub = suite.gateway_stub()
    photo = _photo(3)
    sha = hashlib.sha256(photo).hexdigest()
    # acme's callers may not see the first holder's licence, so the second upload is an asset of its own.
    acks = _ingest(stub, [_request("hidden", photo, licence="LicenseRef-Proprietary")])
    acks |= _ingest(stub, [_request("shown", photo)])
    assert acks["hidden"].outcome == acks["shown"].outcome == OUT.INGEST_OUTCOME_CREATED
    env = suite.gateway_env
    client, bucket = _client(env), env["IMAGESEARCH_GATEWAY_BLOB_S3_BUCKET"]

    stub.DeleteAsset(gateway_pb2.DeleteAssetRequest(asset_id="shown"), metadata=ALICE, timeout=30)
    assert _exists(client, bucket, f"acme/{sha}/original")
    stub.DeleteAsset(gateway_pb2.DeleteAssetRequest(asset_id="hidden"), metadata=ALICE, timeout=30)
    assert not _exists(client, bucket, f"acme/{sha}/original")
    assert not _exists(client, bucket, f"acme/{sha}/thumbnail")


def test_object_store_down_fails_the_item_and_indexes_nothing(suite: Suite) -> None:
    stub = suite.gateway_stub()
    photo = _photo(4)
    stack = Stack(REPO_ROOT)
    stack.stop("minio")
    try:
        acks = _ingest(stub, [_request("while-down", photo)])
    finally:
        stack.start("minio")  # same ports: the gateway's client keeps working
    ack = acks["while-down"]
    assert ack.outcome == OUT.INGEST_OUTCOME_FAILED and ack.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert ack.error.message == "the image store is unavailable; retry later"
    with pytest.raises(grpc.RpcError) as err:
        stub.GetAsset(gateway_pb2.GetAssetRequest(asset_id="while-down"), metadata=ALICE, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    again = _ingest(stub, [_request("while-down", photo)])  # re-sending once it is back is safe
    assert again["while-down"].outcome == OUT.INGEST_OUTCOME_CREATED, again["while-down"].error
    _, data = _image(stub, "while-down", gateway_pb2.IMAGE_VARIANT_ORIGINAL)
    assert data == photo
