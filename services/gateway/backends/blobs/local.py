"""The embedded default: blobs as files under one directory (``<root>/<tenant>/<sha256>/<variant>``).

A put writes a temporary file beside the target, fsyncs it, renames it over the target and fsyncs the
directory: a crash leaves either the old blob, the new one, or a stray temporary file, never a torn one.
Blocking file work runs in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from services.common.files import replace_durably
from services.gateway.backends.blobs.base import Blob, BlobKey, BlobStoreUnavailable
from services.gateway.backends.blobs.media import media_type

P = ParamSpec("P")
T = TypeVar("T")


class LocalBlobStore:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, key: BlobKey) -> Path:
        return self.root / key.path

    async def put(self, key: BlobKey, data: bytes, content_type: str) -> None:
        await self._run(self._put_sync, key, data)

    async def get(self, key: BlobKey) -> Blob | None:
        data = await self._run(self._read_sync, key)
        return None if data is None else Blob(data, media_type(data))

    async def stat(self, key: BlobKey) -> int | None:
        return await self._run(self._size_sync, key)

    async def delete(self, key: BlobKey) -> None:
        await self._run(self._delete_sync, key)

    async def ready(self) -> bool:
        return await asyncio.to_thread(os.access, self.root, os.W_OK) if self.root.exists() else True

    async def close(self) -> None:
        return None

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except OSError as exc:
            raise BlobStoreUnavailable(f"directory {self.root}: {exc}") from exc

    def _put_sync(self, key: BlobKey, data: bytes) -> None:
        replace_durably(self._file(key), data)

    def _read_sync(self, key: BlobKey) -> bytes | None:
        try:
            return self._file(key).read_bytes()
        except FileNotFoundError:
            return None

    def _size_sync(self, key: BlobKey) -> int | None:
        try:
            return self._file(key).stat().st_size
        except FileNotFoundError:
            return None

    def _delete_sync(self, key: BlobKey) -> None:
        target = self._file(key)
        target.unlink(missing_ok=True)
        # Drop the content's directory once its last variant is gone (a tenant's directory stays).
        try:
            target.parent.rmdir()
        except OSError:
            pass
