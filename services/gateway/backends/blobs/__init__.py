"""Where the gateway keeps originals and thumbnails: `make_blob_store(settings)` picks the adapter.

- `local.LocalBlobStore`: a directory (the embedded default, `.data/blobs`);
- `s3.S3BlobStore`: an S3-compatible object store (MinIO in the local stack and compose).
"""

from __future__ import annotations

from services.gateway.backends.blobs.base import Blob, BlobKey, BlobStore, BlobStoreUnavailable
from services.gateway.backends.blobs.local import LocalBlobStore
from services.gateway.settings import BlobSettings

__all__ = ["Blob", "BlobKey", "BlobStore", "BlobStoreUnavailable", "make_blob_store"]


def make_blob_store(settings: BlobSettings) -> BlobStore:
    if settings.blob_backend == "local":
        return LocalBlobStore(settings.blob_dir)
    # Imported here: only the S3 adapter needs the client library.
    from services.gateway.backends.blobs.s3 import S3BlobStore

    return S3BlobStore(
        settings.blob_s3_endpoint,
        settings.blob_s3_bucket,
        settings.blob_s3_access_key,
        settings.blob_s3_secret_key.get_secret_value(),
        secure=settings.blob_s3_secure,
        region=settings.blob_s3_region,
        create_bucket=settings.blob_s3_create_bucket,
        timeout_s=settings.blob_s3_timeout_s,
        ca_file=str(settings.blob_s3_ca_file) if settings.blob_s3_ca_file else None,
    )
