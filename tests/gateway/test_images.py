"""Originals and thumbnails: the key layout, the local-directory store, thumbnails, and the gateway's
use of them (kept at ingest before the index write, GetAssetImage, removal on delete) over the fakes of
test_core with the real local store. The S3 adapter against a real MinIO: tests/gateway/test_object_store.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from pathlib import Path

import grpc
import numpy as np
import pytest
from imagesearch.v1 import gateway_pb2
from PIL import Image, PngImagePlugin

from services.common.errors import DomainError, InvalidArgument, NotFound, PermissionDenied
from services.gateway.auth import Authenticator
from services.gateway.backends.blobs import BlobKey, BlobStoreUnavailable
from services.gateway.backends.blobs.local import LocalBlobStore
from services.gateway.backends.blobs.media import media_type
from services.gateway.domain import ImageVariant, IngestOutcome
from services.gateway.policy import AuditLog
from services.gateway.server import GatewayServicer
from services.gateway.thumbnails import make_thumbnail
from tests.gateway.test_core import ALICE, GUS, KEYS, World, item, run_ingest

SHA = "ab" * 32


def _image(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 200, 30, 0) if mode == "RGBA" else (10, 200, 30)).save(buf, fmt)
    return buf.getvalue()


def _noisy_png(words: str, side: int) -> bytes:
    """A PNG that does not compress (random pixels), with the concepts FakeEncoder reads."""
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    info = PngImagePlugin.PngInfo()
    info.add_text("concepts", words)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


# --- key layout and the local store ----------------------------------------------------------------


def test_key_layout_is_tenant_digest_variant() -> None:
    assert BlobKey("acme", SHA, ImageVariant.ORIGINAL).path == f"acme/{SHA}/original"
    assert BlobKey("a-b_1", SHA, ImageVariant.THUMBNAIL).path == f"a-b_1/{SHA}/thumbnail"
    for tenant, sha in (("../x", SHA), ("", SHA), ("acme", "AB" * 32), ("acme", "ab"), ("a/b", SHA)):
        with pytest.raises(ValueError):
            BlobKey(tenant, sha, ImageVariant.ORIGINAL)


async def test_local_store_round_trip(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    key = BlobKey("acme", SHA, ImageVariant.ORIGINAL)
    assert await store.get(key) is None and await store.stat(key) is None
    png = _image("RGB", (4, 4), "PNG")
    await store.put(key, png, "image/png")
    blob = await store.get(key)
    assert blob is not None and blob.data == png and blob.content_type == "image/png"
    assert await store.stat(key) == len(png)
    assert (tmp_path / "blobs" / "acme" / SHA / "original").read_bytes() == png
    await store.put(key, b"\xff\xd8\xffnew", "image/jpeg")  # overwrite
    assert (await store.get(key)).data == b"\xff\xd8\xffnew"  # type: ignore[union-attr]
    assert os.listdir(tmp_path / "blobs" / "acme" / SHA) == ["original"]  # no temporary file left
    await store.delete(key)
    await store.delete(key)  # absent is fine
    assert await store.get(key) is None
    assert not (tmp_path / "blobs" / "acme" / SHA).exists()  # the content's directory went with it
    assert await store.ready()


async def test_local_store_failure_is_unavailable_and_names_no_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    store = LocalBlobStore(blocker)  # a file where the directory should be
    with pytest.raises(BlobStoreUnavailable) as err:
        await store.put(BlobKey("acme", SHA, ImageVariant.ORIGINAL), b"x", "image/png")
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert str(tmp_path) not in err.value.public and "retry" in err.value.public


def test_media_type_from_signature() -> None:
    assert media_type(_image("RGB", (2, 2), "PNG")) == "image/png"
    assert media_type(_image("RGB", (2, 2), "JPEG")) == "image/jpeg"
    assert media_type(_image("RGB", (2, 2), "WEBP")) == "image/webp"
    assert media_type(_image("RGB", (2, 2), "GIF")) == "image/gif"
    assert media_type(b"nothing") == "application/octet-stream"


def test_thumbnail_is_a_small_jpeg_and_flattens_transparency() -> None:
    thumb = Image.open(io.BytesIO(make_thumbnail(_image("RGBA", (1000, 400), "PNG"), 256, 85)))
    assert thumb.format == "JPEG" and thumb.size == (256, 102) and thumb.mode == "RGB"
    pixel = thumb.getpixel((128, 50))
    assert isinstance(pixel, tuple) and pixel[0] > 200  # transparent -> white
    small = Image.open(io.BytesIO(make_thumbnail(_image("RGB", (40, 30), "JPEG"), 256, 85)))
    assert small.size == (40, 30)  # never enlarged
    with pytest.raises(InvalidArgument):
        make_thumbnail(b"\x89PNG\r\n\x1a\ntruncated", 256, 85)


# --- the gateway -----------------------------------------------------------------------------------


async def test_ingest_keeps_original_and_thumbnail_and_get_asset_image_serves_them() -> None:
    w = World()
    one = item("cat", "cat sofa")
    acks = await run_ingest(w, [one])
    sha = acks["cat"].content_sha256
    assert sha == hashlib.sha256(one.image).hexdigest()

    original = await w.gw.get_asset_image(ALICE, "cat", ImageVariant.ORIGINAL)
    assert original.data == one.image and original.content_sha256 == sha
    assert original.content_type == "image/png"
    thumb = await w.gw.get_asset_image(ALICE, "cat", ImageVariant.THUMBNAIL)
    assert thumb.content_type == "image/jpeg" and Image.open(io.BytesIO(thumb.data)).format == "JPEG"
    assert thumb.content_sha256 == hashlib.sha256(thumb.data).hexdigest()

    with pytest.raises(NotFound) as err:  # another tenant: the same answer as for an absent asset
        await w.gw.get_asset_image(GUS, "cat", ImageVariant.ORIGINAL)
    assert "cat" in err.value.message and "acme" not in err.value.message
    with pytest.raises(NotFound):
        await w.gw.get_asset_image(ALICE, "absent", ImageVariant.ORIGINAL)


async def test_get_asset_image_follows_the_visibility_of_get_asset() -> None:
    w = World()
    await run_ingest(w, [item("mit", "dog", license_name="MIT")])  # not among acme's allowed licences
    with pytest.raises(NotFound):
        await w.gw.get_asset_image(ALICE, "mit", ImageVariant.ORIGINAL)
    denied = [e for e in w.audit if e["action"] == "get_asset_image" and e["decision"] == "deny"]
    assert denied and denied[-1]["asset_id"] == "mit"


async def test_get_asset_image_needs_the_search_role() -> None:
    w = World()
    ingest_only = KEYS.lookup_key("a")
    assert ingest_only is not None
    no_roles = type(ingest_only)(**{**ingest_only.__dict__, "roles": frozenset()})
    with pytest.raises(PermissionDenied):
        await w.gw.get_asset_image(no_roles, "x", ImageVariant.ORIGINAL)


async def test_an_object_store_failure_fails_the_item_and_indexes_nothing() -> None:
    w = World()

    async def down(*args: object, **kwargs: object) -> None:
        raise BlobStoreUnavailable("127.0.0.1:9000: connection refused")

    w.blobs.put = down  # type: ignore[method-assign]
    acks = await run_ingest(w, [item("lost", "cat")])
    assert acks["lost"].outcome is IngestOutcome.FAILED and acks["lost"].error_code == 14
    assert "127.0.0.1" not in acks["lost"].error_message and "retry" in acks["lost"].error_message
    assert ("acme", "lost") not in w.search.store


async def test_resending_same_bytes_stores_missing_images() -> None:
    w = World()
    one = item("cat", "cat sofa")
    acks = await run_ingest(w, [one])
    await w.gw.images.forget("acme", acks["cat"].content_sha256)  # as if indexed before images were kept
    with pytest.raises(NotFound) as err:
        await w.gw.get_asset_image(ALICE, "cat", ImageVariant.ORIGINAL)
    assert "ingest it again" in err.value.message
    again = await run_ingest(w, [one])
    assert again["cat"].outcome is IngestOutcome.UNCHANGED
    assert (await w.gw.get_asset_image(ALICE, "cat", ImageVariant.ORIGINAL)).data == one.image


async def test_a_damaged_original_is_data_loss(tmp_path: Path) -> None:
    w = World()
    acks = await run_ingest(w, [item("cat", "cat sofa")])
    key = BlobKey("acme", acks["cat"].content_sha256, ImageVariant.ORIGINAL)
    await w.blobs.put(key, b"\x89PNG\r\n\x1a\nflipped bits", "image/png")
    with pytest.raises(DomainError) as err:
        await w.gw.get_asset_image(ALICE, "cat", ImageVariant.ORIGINAL)
    assert err.value.code == grpc.StatusCode.DATA_LOSS


async def test_delete_removes_images_only_when_no_other_asset_of_the_tenant_holds_them() -> None:
    w = World()
    # The first holder is hidden from acme's callers (its licence), so the same bytes are stored again
    # as an asset of their own instead of answering DUPLICATE: two assets, one content.
    first = await run_ingest(w, [item("hidden", "cat", license_name="MIT")])
    second = await run_ingest(w, [item("shown", "cat")])
    assert second["shown"].outcome is IngestOutcome.CREATED
    sha = first["hidden"].content_sha256
    assert second["shown"].content_sha256 == sha
    # globex holds the same bytes too, under its own key.
    await run_ingest(w, [item("theirs", "cat")], who=GUS)

    await w.gw.delete_asset(ALICE, "shown")
    assert await w.gw.images.kept("acme", sha)  # "hidden" still holds them
    await w.gw.delete_asset(ALICE, "hidden")
    assert not await w.gw.images.kept("acme", sha)
    assert await w.blobs.get(BlobKey("acme", sha, ImageVariant.THUMBNAIL)) is None
    assert await w.gw.images.kept("globex", sha)  # another tenant's copy is untouched


class _Context:
    def invocation_metadata(self) -> list[tuple[str, str]]:
        return [("authorization", "Bearer a")]


async def test_servicer_streams_the_image_in_chunks_metadata_first() -> None:
    w = World(blob_chunk_bytes=1024)
    big = _noisy_png("cat", 200)  # ~120 KB: many chunks
    acks = await run_ingest(w, [dataclasses.replace(item("big", "cat"), image=big)])
    servicer = GatewayServicer(w.gw, Authenticator(KEYS, None), AuditLog(lambda e: None))
    request = gateway_pb2.GetAssetImageRequest(asset_id="big")
    messages = [m async for m in servicer.GetAssetImage(request, _Context())]  # type: ignore[arg-type]
    assert len(messages) == -(-len(big) // 1024) and all(len(m.chunk) <= 1024 for m in messages)
    first = messages[0]
    assert (first.content_type, first.total_bytes) == ("image/png", len(big))
    assert first.content_sha256 == acks["big"].content_sha256
    assert not any(m.content_type or m.total_bytes or m.content_sha256 for m in messages[1:])
    assert b"".join(m.chunk for m in messages) == big

    bad = gateway_pb2.GetAssetImageRequest(asset_id="big", variant=7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as err:
        [m async for m in servicer.GetAssetImage(bad, _Context())]  # type: ignore[arg-type]
    assert "IMAGE_VARIANT_THUMBNAIL" in err.value.message
