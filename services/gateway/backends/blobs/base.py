"""The object store as the gateway sees it: content-addressed image blobs behind one small protocol.

A blob's key is ``<tenant>/<sha256 of the original>/<variant>``: one copy per tenant and content, however
many assets hold it (assets are per tenant, so is every blob: deleting one tenant's content never
touches another's). Failures are `BlobStoreUnavailable` (UNAVAILABLE); a missing blob is `None`, not an
error, because "not stored" is an ordinary answer (an asset ingested before originals were kept).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from services.gateway.backends.errors import BackendUnavailable
from services.gateway.domain import ImageVariant

_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BlobKey:
    tenant: str
    sha256: str  # of the original's bytes, also for its thumbnail
    variant: ImageVariant

    def __post_init__(self) -> None:
        # Tenant names are validated at authentication; checked again because they become path parts.
        if not _TENANT.match(self.tenant):
            raise ValueError(f"tenant {self.tenant!r} is not 1-64 of [A-Za-z0-9_-]")
        if not _SHA256.match(self.sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")

    @property
    def path(self) -> str:
        """The object name (S3) or relative file path (local directory)."""
        return f"{self.tenant}/{self.sha256}/{self.variant.value}"


@dataclass(frozen=True)
class Blob:
    data: bytes
    content_type: str


class BlobStoreUnavailable(BackendUnavailable):
    """The object store could not be reached or refused the call (the details are for the log only)."""

    def __init__(self, message: str) -> None:
        super().__init__("object store", message, public="the image store is unavailable; retry later")


class BlobStore(Protocol):
    name: str

    async def put(self, key: BlobKey, data: bytes, content_type: str) -> None:
        """Store `data` under `key` durably (readable by `get` once this returns); overwrites."""
        ...

    async def get(self, key: BlobKey) -> Blob | None: ...

    async def stat(self, key: BlobKey) -> int | None:
        """The stored size in bytes, None when absent."""
        ...

    async def delete(self, key: BlobKey) -> None:
        """Remove `key`; absent is fine."""
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...
