"""Blobs in an S3-compatible object store (MinIO in the local stack, any S3 in production), through the
`minio` client library.

The client is synchronous: every call runs in a thread. Its own HTTP pool is replaced by one with short
timeouts and a bounded retry (the library's default waits minutes for a dead endpoint). The bucket is
created on first use when `create_bucket` is set (the local stack's MinIO starts empty).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from services.gateway.backends.blobs.base import Blob, BlobKey, BlobStoreUnavailable

P = ParamSpec("P")
T = TypeVar("T")

# S3 error codes that mean "no such object" (a stat answers a bare 404 as NoSuchKey too).
_ABSENT = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


class S3BlobStore:
    name = "s3"

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool,
        region: str | None,
        create_bucket: bool,
        timeout_s: float,
        ca_file: str | None = None,
    ) -> None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(timeout_s, 2.0), read=timeout_s),
            maxsize=16,
            retries=urllib3.Retry(total=2, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504)),
            ca_certs=ca_file,
            cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._http = http
        self.endpoint = endpoint
        self.bucket = bucket
        self._create_bucket = create_bucket
        self._bucket_checked = False
        self._bucket_lock = asyncio.Lock()

    async def put(self, key: BlobKey, data: bytes, content_type: str) -> None:
        await self._ensure_bucket()
        await self._run(
            self._client.put_object,
            self.bucket,
            key.path,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
        )

    async def get(self, key: BlobKey) -> Blob | None:
        await self._ensure_bucket()
        return await self._run(self._get_sync, key)

    async def stat(self, key: BlobKey) -> int | None:
        await self._ensure_bucket()
        try:
            found = await self._run(self._client.stat_object, self.bucket, key.path)
        except _Absent:
            return None
        return int(found.size or 0)

    async def delete(self, key: BlobKey) -> None:
        await self._ensure_bucket()
        await self._run(self._client.remove_object, self.bucket, key.path)

    async def ready(self) -> bool:
        try:
            await self._ensure_bucket()
            return bool(await self._run(self._client.bucket_exists, self.bucket))
        except BlobStoreUnavailable:
            return False

    async def close(self) -> None:
        self._http.clear()

    def _get_sync(self, key: BlobKey) -> Blob | None:
        try:
            response = self._client.get_object(self.bucket, key.path)
        except S3Error as exc:
            if exc.code in _ABSENT:
                return None
            raise
        try:
            data = response.read()
            content_type = response.headers.get("Content-Type") or "application/octet-stream"
        finally:
            response.close()
            response.release_conn()
        return Blob(data, content_type)

    async def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        async with self._bucket_lock:
            if self._bucket_checked:
                return
            exists = await self._run(self._client.bucket_exists, self.bucket)
            if not exists:
                if not self._create_bucket:
                    raise BlobStoreUnavailable(f"bucket {self.bucket!r} does not exist at {self.endpoint}")
                try:
                    await self._run(self._client.make_bucket, self.bucket)
                except BlobStoreUnavailable:
                    # Another replica may have created it meanwhile.
                    if not await self._run(self._client.bucket_exists, self.bucket):
                        raise
            self._bucket_checked = True

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except S3Error as exc:
            if exc.code in _ABSENT:
                raise _Absent(exc.code) from exc
            raise BlobStoreUnavailable(f"{self.endpoint}: {exc.code}: {exc.message}") from exc
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise BlobStoreUnavailable(f"{self.endpoint}: {exc}") from exc


class _Absent(Exception):
    """The object does not exist (caught where absence is an answer)."""
