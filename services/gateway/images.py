"""The stored images of assets: each original once per tenant and content, plus its thumbnail.

Ingest keeps both before the index write (`keep`), so an asset the index holds has its images; a read
(`read`) returns one of them, checked against its digest; a delete (`forget`) removes them once no asset
of the tenant holds the content any more (the caller decides that).
"""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import structlog

from services.common.errors import DomainError, NotFound
from services.gateway.backends.blobs import BlobKey, BlobStore
from services.gateway.backends.blobs.media import media_type
from services.gateway.domain import AssetImage, ImageVariant
from services.gateway.thumbnails import THUMBNAIL_MEDIA_TYPE, make_thumbnail

log = structlog.get_logger("images")


class ImageCorrupt(DomainError):
    """A stored original whose bytes no longer match its digest."""

    code = grpc.StatusCode.DATA_LOSS


class AssetImages:
    def __init__(self, store: BlobStore, thumbnail_max_side: int, thumbnail_quality: int) -> None:
        self.store = store
        self._max_side = thumbnail_max_side
        self._quality = thumbnail_quality

    async def thumbnail(self, original: bytes) -> bytes:
        """The preview of an original (CPU work, in a thread)."""
        return await asyncio.to_thread(make_thumbnail, original, self._max_side, self._quality)

    async def keep(self, tenant: str, sha: str, original: bytes, thumbnail: bytes) -> None:
        """Store both images (the thumbnail first: an original present means both are)."""
        await self.store.put(BlobKey(tenant, sha, ImageVariant.THUMBNAIL), thumbnail, THUMBNAIL_MEDIA_TYPE)
        await self.store.put(BlobKey(tenant, sha, ImageVariant.ORIGINAL), original, media_type(original))

    async def kept(self, tenant: str, sha: str) -> bool:
        return await self.store.stat(BlobKey(tenant, sha, ImageVariant.ORIGINAL)) is not None

    async def read(self, tenant: str, asset_id: str, sha: str, variant: ImageVariant) -> AssetImage:
        blob = await self.store.get(BlobKey(tenant, sha, variant))
        if blob is None:
            raise NotFound(
                f"asset {asset_id!r} has no stored {variant.value} image (it was indexed before originals "
                "were kept): ingest it again to store it"
            )
        digest = hashlib.sha256(blob.data).hexdigest()
        if variant is ImageVariant.ORIGINAL and digest != sha:
            log.error("stored original does not match its digest", tenant=tenant, asset_id=asset_id)
            raise ImageCorrupt(f"the stored original of asset {asset_id!r} is damaged: ingest it again")
        return AssetImage(content_type=blob.content_type, content_sha256=digest, data=blob.data)

    async def forget(self, tenant: str, sha: str) -> None:
        """Remove both images (the original first: a thumbnail left behind is never served alone)."""
        await self.store.delete(BlobKey(tenant, sha, ImageVariant.ORIGINAL))
        await self.store.delete(BlobKey(tenant, sha, ImageVariant.THUMBNAIL))
