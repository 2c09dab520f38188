"""The stored images of assets: each original once per tenant and content, plus its thumbnail.

Ingest keeps the original before the index write (`keep`), so an asset the index holds has it. The
thumbnail is made before the acknowledgement when the asset is visible at once (inline analysis), and
by the analysis worker, before the asset becomes visible, when analysis is deferred (it is CPU work the
acknowledgement need not wait for); a thumbnail read that finds none makes it from the original. A read
(`read`) returns one of them, checked against its digest; a delete (`forget`) removes them once no asset
of the tenant holds the content any more (the caller decides that).
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import Executor

import grpc
import structlog

from services.common.errors import DomainError, NotFound
from services.gateway.backends.blobs import Blob, BlobKey, BlobStore
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

    async def thumbnail(self, original: bytes, executor: Executor | None = None) -> bytes:
        """The preview of an original (CPU work, on `executor`'s threads; None: the default executor)."""
        return await asyncio.get_running_loop().run_in_executor(
            executor, make_thumbnail, original, self._max_side, self._quality
        )

    async def keep(self, tenant: str, sha: str, original: bytes, thumbnail: bytes | None) -> None:
        """Store the original, and the thumbnail when given (first: a reader of the original's key
        then finds the thumbnail too)."""
        if thumbnail is not None:
            await self._put_thumbnail(tenant, sha, thumbnail)
        await self.store.put(BlobKey(tenant, sha, ImageVariant.ORIGINAL), original, media_type(original))

    async def ensure_thumbnail(
        self, tenant: str, sha: str, original: bytes, executor: Executor | None = None
    ) -> None:
        """Make and store the thumbnail of a kept original unless it is stored already."""
        if await self.store.stat(BlobKey(tenant, sha, ImageVariant.THUMBNAIL)) is None:
            await self._put_thumbnail(tenant, sha, await self.thumbnail(original, executor))

    async def _put_thumbnail(self, tenant: str, sha: str, thumbnail: bytes) -> None:
        await self.store.put(BlobKey(tenant, sha, ImageVariant.THUMBNAIL), thumbnail, THUMBNAIL_MEDIA_TYPE)

    async def kept(self, tenant: str, sha: str) -> bool:
        return await self.store.stat(BlobKey(tenant, sha, ImageVariant.ORIGINAL)) is not None

    async def read(self, tenant: str, asset_id: str, sha: str, variant: ImageVariant) -> AssetImage:
        blob = await self.store.get(BlobKey(tenant, sha, variant))
        if blob is None and variant is ImageVariant.THUMBNAIL:
            blob = await self._thumbnail_of_kept(tenant, sha)
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

    async def _thumbnail_of_kept(self, tenant: str, sha: str) -> Blob | None:
        """The thumbnail made now from the kept original (its analysis stored none yet), or None."""
        original = await self.store.get(BlobKey(tenant, sha, ImageVariant.ORIGINAL))
        if original is None or hashlib.sha256(original.data).hexdigest() != sha:
            return None
        try:
            thumbnail = await self.thumbnail(original.data)
        except DomainError:  # an original that cannot be decoded has no preview
            return None
        await self._put_thumbnail(tenant, sha, thumbnail)
        return Blob(thumbnail, THUMBNAIL_MEDIA_TYPE)

    async def forget(self, tenant: str, sha: str) -> None:
        """Remove both images (the original first: a thumbnail left behind is never served alone)."""
        await self.store.delete(BlobKey(tenant, sha, ImageVariant.ORIGINAL))
        await self.store.delete(BlobKey(tenant, sha, ImageVariant.THUMBNAIL))
