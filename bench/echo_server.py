#!/usr/bin/env python3
"""A minimal grpc.aio server: the floor the imagesearch services are measured against.

    .venv/bin/python -m bench.echo_server --port 50090 [--no-uvloop] [--host 127.0.0.1] [--page-file PATH]
        [--relay-encoder HOST:PORT --relay-search HOST:PORT]

Same grpcio as the services and the same server options as services/common/server.py (message size
limits, no SO_REUSEPORT, keepalive policy), but no interceptors, no reflection, no metrics, no logging
and trivial handlers, so a load test against it measures grpc.aio itself on this machine:

- `grpc.health.v1.Health/Check`: answers SERVING to any request (a constant, pre-serialised response).
  ghz calls this with the health protoset, exactly as it calls the services' own health checks, so
  "service health check / echo health check" is the cost of the services' interceptor chain, health
  servicer and process, on the same call.
- `imagesearch.bench.Echo/Echo`: returns the request bytes unchanged (no (de)serialisation at all), for
  Python clients that want a payload-size sweep.
- `imagesearch.v1.GatewayService/Search`, with `--page-file PATH`: answers every request with the bytes of
  PATH (read at the first call, so a benchmark can write a real page after the server started), e.g. a
  captured cached search page: a server that does no work for the same response the gateway sends, so
  a load generator's own ceiling on that response (ghz decodes each one) shows beside the gateway's.
- with `--relay-encoder` and `--relay-search` as well, `GatewayService/Search` first makes the two
  hops of an uncached text search, as bench/ghz/perf_suite.json measures them alone (EncodeTexts of
  the request's text, then a hybrid Query of tenant demo with that vector, window 100, vectors
  included, the search cache skipped), then answers with the page: a gateway that does nothing but
  its hops, so "uncached search / sum of its hops" has a floor measured beside it (issue #19).

Runs on uvloop by default, like the services (ServiceSettings.use_uvloop); `--no-uvloop` gives plain
asyncio, to measure what uvloop buys. Prints `listening on HOST:PORT` once it serves; SIGTERM / SIGINT
stop it. Binds loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

MAX_MESSAGE_BYTES = 32 * 1024 * 1024  # ServiceSettings.max_message_bytes' default

# services/common/server.py's options, minus nothing: the comparison must be like for like.
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]

_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING).SerializeToString()


async def _check(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return _SERVING


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def _page(path: Path) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
    page: list[bytes] = []

    async def search(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if not page:
            try:
                page.append(path.read_bytes())
            except OSError:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"no page file at {path} yet")
        return page[0]

    return search


RELAY_TENANT = "demo"  # perf_report.py's seeded tenant
RELAY_WINDOW = 100  # the gateway's default candidate window (rerank_candidate_window)


def _relay(
    page_file: Path, encoder: str, search: str
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
    from imagesearch.v1 import (
        encoder_pb2,
        encoder_pb2_grpc,
        gateway_pb2,
        search_pb2,
        search_pb2_grpc,
    )

    stubs: list[tuple[encoder_pb2_grpc.EncoderServiceStub, search_pb2_grpc.SearchServiceStub]] = []
    answer = _page(page_file)

    async def search_with_hops(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if not stubs:  # channels made on the server's own event loop
            stubs.append(
                (
                    encoder_pb2_grpc.EncoderServiceStub(grpc.aio.insecure_channel(encoder)),
                    search_pb2_grpc.SearchServiceStub(grpc.aio.insecure_channel(search)),
                )
            )
        encoder_stub, search_stub = stubs[0]
        text = gateway_pb2.SearchRequest.FromString(request).text
        encoded = await encoder_stub.EncodeTexts(
            encoder_pb2.EncodeTextsRequest(texts=[encoder_pb2.TextInput(id="q", text=text)]), timeout=30
        )
        await search_stub.Query(
            search_pb2.QueryRequest(
                tenant=RELAY_TENANT,
                text=text,
                vector=encoded.results[0].embedding,
                limit=RELAY_WINDOW,
                include_vectors=True,
                skip_cache=True,
            ),
            timeout=30,
        )
        return await answer(request, context)

    return search_with_hops


def handlers(
    page_file: Path | None = None, relay: tuple[str, str] | None = None
) -> list[grpc.GenericRpcHandler]:
    # Raw bytes in and out (no deserializer/serializer): the cheapest handler grpc.aio can run.
    health = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(_check)}
    )
    echo = grpc.method_handlers_generic_handler(
        "imagesearch.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    if page_file is None:
        return [health, echo]
    search = _page(page_file) if relay is None else _relay(page_file, *relay)
    page = grpc.method_handlers_generic_handler(
        "imagesearch.v1.GatewayService", {"Search": grpc.unary_unary_rpc_method_handler(search)}
    )
    return [health, echo, page]


async def serve(
    host: str, port: int, page_file: Path | None = None, relay: tuple[str, str] | None = None
) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers(handlers(page_file, relay))
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"cannot bind {host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    print(f"listening on {host}:{bound} ({type(loop).__module__})", flush=True)
    await stop.wait()
    await server.stop(1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    ap.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    ap.add_argument("--page-file", type=Path, help="serve GatewayService/Search with this file's bytes")
    ap.add_argument("--relay-encoder", help="with --page-file: Search first calls this encoder (EncodeTexts)")
    ap.add_argument("--relay-search", help="with --page-file: Search then calls this search service (Query)")
    args = ap.parse_args(argv)
    relay = None
    if args.relay_encoder or args.relay_search:
        if not (args.relay_encoder and args.relay_search and args.page_file):
            ap.error("--relay-encoder and --relay-search go together, with --page-file")
        relay = (args.relay_encoder, args.relay_search)
    hosts = [args.host, *(address.rsplit(":", 1)[0] for address in relay or ())]
    for host in (h.strip("[]") for h in hosts):
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise SystemExit("the echo server binds and relays to loopback addresses only")
    loop_factory = None
    if not args.no_uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(args.host, args.port, args.page_file, relay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
