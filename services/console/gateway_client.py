"""The console's one gRPC client of the gateway: every call carries the signed-in caller's key, so the
gateway's authentication and policy decide every result and every image (the console has no authority)."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

from services.console import convert
from services.console.domain import (
    AssetView,
    Click,
    ConsoleError,
    IngestItemOutcome,
    ResultsPage,
    SearchQuery,
    Upload,
)
from services.console.settings import ConsoleSettings

# The gateway's health names: "" is the gateway itself, "backend:<name>" each backend it probes.
BACKENDS = ("search", "encoder", "ratelimit")
_HEALTH_DEADLINE_S = 2.0


@dataclass
class GatewayTime:
    """Seconds this request spent waiting on the gateway (the Server-Timing header reports it)."""

    seconds: float = 0.0
    calls: int = 0


REQUEST_GATEWAY_TIME: contextvars.ContextVar[GatewayTime | None] = contextvars.ContextVar(
    "console_gateway_time", default=None
)


@contextlib.contextmanager
def _timed() -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        spent = REQUEST_GATEWAY_TIME.get()
        if spent is not None:
            spent.seconds += time.perf_counter() - start
            spent.calls += 1


@dataclass(frozen=True)
class Image:
    content_type: str
    data: bytes


def _error(exc: grpc.aio.AioRpcError) -> ConsoleError:
    """The gateway's status and public message; an unreachable gateway says so without its address."""
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return ConsoleError(code.name, "the gateway is unreachable; is the suite running?")
    return ConsoleError(code.name, exc.details() or code.name.lower())


def _channel(settings: ConsoleSettings) -> grpc.aio.Channel:
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", settings.max_upload_bytes + (1 << 20)),
        ("grpc.max_receive_message_length", 64 << 20),
    ]
    if settings.gateway_tls_ca_file is None:
        return grpc.aio.insecure_channel(settings.gateway_address, options=options)
    if settings.gateway_tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.gateway_tls_server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=settings.gateway_tls_ca_file.read_bytes())
    return grpc.aio.secure_channel(settings.gateway_address, credentials, options=options)


class GatewayClient:
    def __init__(self, settings: ConsoleSettings) -> None:
        self._deadline_s = settings.gateway_deadline_s
        self._channel = _channel(settings)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    @staticmethod
    def _metadata(api_key: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {api_key}"),)

    async def search(self, api_key: str, query: SearchQuery) -> ResultsPage:
        try:
            with _timed():
                response = await self._stub.Search(
                    convert.search_request_pb(query),
                    metadata=self._metadata(api_key),
                    timeout=self._deadline_s,
                )
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None
        return convert.results_page(response)

    async def similar(self, api_key: str, asset_id: str, query: SearchQuery) -> ResultsPage:
        try:
            with _timed():
                response = await self._stub.SearchSimilar(
                    convert.similar_request_pb(asset_id, query),
                    metadata=self._metadata(api_key),
                    timeout=self._deadline_s,
                )
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None
        return convert.results_page(response)

    async def get_asset(self, api_key: str, asset_id: str) -> AssetView:
        try:
            with _timed():
                response = await self._stub.GetAsset(
                    gateway_pb2.GetAssetRequest(asset_id=asset_id),
                    metadata=self._metadata(api_key),
                    timeout=self._deadline_s,
                )
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None
        return convert.asset_view(response.asset)

    async def check_key(self, api_key: str) -> None:
        """Raises ConsoleError(UNAUTHENTICATED) when the gateway refuses the key. Asks for an asset id no
        caller can have (ids are 1-256 characters; the probe's is 257): a known key gets
        INVALID_ARGUMENT, NOT_FOUND or PERMISSION_DENIED (a key without the search role), never data."""
        try:
            with _timed():
                await self._stub.GetAsset(
                    gateway_pb2.GetAssetRequest(asset_id="~" * 257),
                    metadata=self._metadata(api_key),
                    timeout=self._deadline_s,
                )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                return
            raise _error(exc) from None

    async def asset_image(self, api_key: str, asset_id: str, thumbnail: bool) -> Image | None:
        """The stored thumbnail or original; None when the gateway has none to give (not implemented
        yet, no stored bytes, not visible): the page shows a placeholder instead."""
        variant = gateway_pb2.IMAGE_VARIANT_THUMBNAIL if thumbnail else gateway_pb2.IMAGE_VARIANT_ORIGINAL
        chunks: list[bytes] = []
        content_type = ""
        try:
            call = self._stub.GetAssetImage(
                gateway_pb2.GetAssetImageRequest(asset_id=asset_id, variant=variant),
                metadata=self._metadata(api_key),
                timeout=self._deadline_s,
            )
            async for message in call:
                content_type = content_type or message.content_type
                chunks.append(message.chunk)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise _error(exc) from None
            return None
        return Image(content_type, b"".join(chunks)) if chunks else None

    async def ingest(self, api_key: str, uploads: Iterable[Upload]) -> AsyncIterator[IngestItemOutcome]:
        """One outcome per upload, in the gateway's acknowledgement order."""
        requests = [convert.ingest_request_pb(u) for u in uploads]

        async def stream() -> AsyncIterator[gateway_pb2.IngestRequest]:
            for request in requests:
                yield request

        try:
            call = self._stub.Ingest(
                stream(), metadata=self._metadata(api_key), timeout=self._deadline_s * max(1, len(requests))
            )
            async for ack in call:
                yield convert.ingest_outcome(ack)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None

    async def record_click(self, api_key: str, click: Click) -> None:
        """Best effort: a gateway without feedback (UNIMPLEMENTED) or a failed call loses one click,
        never the page."""
        try:
            with _timed():
                await self._stub.RecordFeedback(
                    convert.feedback_request_pb(click),
                    metadata=self._metadata(api_key),
                    timeout=self._deadline_s,
                )
        except grpc.aio.AioRpcError:
            return

    async def health(self, name: str) -> str:
        """serving, not serving, not configured (the gateway does not probe it) or unreachable."""
        try:
            reply = await self._health.Check(
                health_pb2.HealthCheckRequest(service=name), timeout=_HEALTH_DEADLINE_S
            )
        except grpc.aio.AioRpcError as exc:
            return "not configured" if exc.code() == grpc.StatusCode.NOT_FOUND else "unreachable"
        return "serving" if reply.status == health_pb2.HealthCheckResponse.SERVING else "not serving"
