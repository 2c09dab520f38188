"""A small in-process GatewayService that follows the contract closely enough to drive the client examples
down their success paths (bidirectional Ingest stream, metadata, result parsing, error statuses).

It is a test double of our own gateway, for the examples only: it checks what the clients send (the
bearer key, a decodable image, a licence) and records it. The real gateway is exercised by the same
harness against the running suite (scripts/run_client_examples.sh in CI).
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from imagesearch.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc
from PIL import Image


@dataclass
class Stored:
    request: gateway_pb2.IngestRequest
    sha256: str
    size: tuple[int, int]


@dataclass
class Seen:
    """What the fake observed, for assertions."""

    authorization: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    ingested: list[Stored] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


class FakeGateway(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, api_keys: set[str]) -> None:
        self.api_keys = api_keys
        self.assets: dict[str, Stored] = {}
        self.seen = Seen()
        self._lock = threading.Lock()

    def _enter(self, ctx: grpc.ServicerContext, method: str) -> None:
        md = dict(ctx.invocation_metadata())
        rid = str(md.get("x-request-id") or uuid.uuid4().hex)
        ctx.set_trailing_metadata((("x-request-id", rid),))
        auth = str(md.get("authorization", ""))
        with self._lock:
            self.seen.methods.append(method)
            self.seen.authorization.append(auth)
        if not auth.startswith("Bearer ") or auth.removeprefix("Bearer ") not in self.api_keys:
            ctx.abort(
                grpc.StatusCode.UNAUTHENTICATED, "missing or invalid API key in `authorization: Bearer`"
            )

    def Ingest(
        self, request_iterator: Iterator[gateway_pb2.IngestRequest], ctx: grpc.ServicerContext
    ) -> Iterator[gateway_pb2.IngestResponse]:
        self._enter(ctx, "Ingest")
        for req in request_iterator:
            yield self._ingest_one(req)

    def _ingest_one(self, req: gateway_pb2.IngestRequest) -> gateway_pb2.IngestResponse:
        def failed(code: grpc.StatusCode, message: str) -> gateway_pb2.IngestResponse:
            return gateway_pb2.IngestResponse(
                asset_id=req.asset_id,
                outcome=gateway_pb2.INGEST_OUTCOME_FAILED,
                error=common_pb2.ItemError(code=code.value[0], message=message),
            )

        if not 1 <= len(req.asset_id) <= 256:
            return failed(grpc.StatusCode.INVALID_ARGUMENT, "asset_id must have 1-256 characters")
        if not req.license.name:
            return failed(grpc.StatusCode.INVALID_ARGUMENT, "license.name is required")
        try:
            with Image.open(io.BytesIO(req.image)) as img:
                img.load()
                size = img.size
        except Exception as exc:
            return failed(grpc.StatusCode.INVALID_ARGUMENT, f"image does not decode: {exc}")
        sha = hashlib.sha256(req.image).hexdigest()
        with self._lock:
            for other_id, other in self.assets.items():
                if other.sha256 == sha and other_id != req.asset_id:
                    return gateway_pb2.IngestResponse(
                        asset_id=req.asset_id,
                        outcome=gateway_pb2.INGEST_OUTCOME_DUPLICATE,
                        content_sha256=sha,
                        duplicate_of=other_id,
                    )
            outcome = (
                gateway_pb2.INGEST_OUTCOME_UPDATED
                if req.asset_id in self.assets
                else gateway_pb2.INGEST_OUTCOME_CREATED
            )
            stored = Stored(req, sha, size)
            self.assets[req.asset_id] = stored
            self.seen.ingested.append(stored)
        return gateway_pb2.IngestResponse(asset_id=req.asset_id, outcome=outcome, content_sha256=sha)

    def Search(
        self, request: gateway_pb2.SearchRequest, ctx: grpc.ServicerContext
    ) -> gateway_pb2.SearchResponse:
        self._enter(ctx, "Search")
        if not request.text and not request.image:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "a search needs `text`, `image` or both")
        page_size = request.page_size or 20
        if not 1 <= page_size <= 100:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_size must be 1-100, got {page_size}")
        query = _tokens(request.text)
        with self._lock:
            scored = []
            for asset_id, stored in self.assets.items():
                words = _tokens(" ".join([stored.request.caption, *stored.request.tags]))
                score = len(query & words)
                if score:
                    scored.append((score, asset_id, stored))
        scored.sort(key=lambda t: (-t[0], t[1]))
        results = [
            gateway_pb2.SearchResult(
                asset=common_pb2.Asset(
                    asset_id=asset_id,
                    caption=stored.request.caption,
                    tags=stored.request.tags,
                    width=stored.size[0],
                    height=stored.size[1],
                    content_sha256=stored.sha256,
                ),
                scores=gateway_pb2.StageScores(keyword=float(score), final=float(score)),
            )
            for score, asset_id, stored in scored[:page_size]
        ]
        return gateway_pb2.SearchResponse(results=results)

    def GetAsset(
        self, request: gateway_pb2.GetAssetRequest, ctx: grpc.ServicerContext
    ) -> gateway_pb2.GetAssetResponse:
        self._enter(ctx, "GetAsset")
        with self._lock:
            stored = self.assets.get(request.asset_id)
        if stored is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"asset {request.asset_id!r} does not exist")
        return gateway_pb2.GetAssetResponse(
            asset=common_pb2.Asset(asset_id=request.asset_id, caption=stored.request.caption)
        )

    def DeleteAsset(
        self, request: gateway_pb2.DeleteAssetRequest, ctx: grpc.ServicerContext
    ) -> gateway_pb2.DeleteAssetResponse:
        self._enter(ctx, "DeleteAsset")
        with self._lock:
            if self.assets.pop(request.asset_id, None) is None:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"asset {request.asset_id!r} does not exist")
            self.seen.deleted.append(request.asset_id)
        return gateway_pb2.DeleteAssetResponse()


class FakeGatewayServer:
    """`with FakeGatewayServer({"key"}) as gw:` serves on a free loopback port (`gw.address`)."""

    def __init__(self, api_keys: set[str]) -> None:
        self.servicer = FakeGateway(api_keys)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(self.servicer, self._server)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FakeGatewayServer:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)
