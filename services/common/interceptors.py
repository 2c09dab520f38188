"""Server and client interceptors: request id, deadline context, access log, metrics, error mapping.

Servicers stay thin: they raise `DomainError`s (or let them propagate from domain code) and this
interceptor turns them into gRPC statuses, counts them and logs them, once, for every method.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from services.common import context
from services.common.errors import DomainError, InvalidArgument
from services.common.logging import debug_enabled
from services.common.metrics import GRPC_HANDLED, GRPC_LATENCY, GRPC_STARTED

log = structlog.get_logger("rpc")

# Client errors are the caller's to fix and logged at info; the rest are ours (error).
_CLIENT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


class _MethodMetrics:
    """One method's metric children, looked up once: `labels()` hashes and locks on every call, a
    measurable share of the cheapest RPCs."""

    __slots__ = ("handled", "latency", "method", "service", "started")

    def __init__(self, full_method: str) -> None:
        _, self.service, self.method = full_method.split("/", 2)
        self.started = GRPC_STARTED.labels(self.service, self.method)
        self.latency = GRPC_LATENCY.labels(self.service, self.method)
        self.handled: dict[grpc.StatusCode, Any] = {}

    def count(self, code: grpc.StatusCode, elapsed_s: float) -> None:
        child = self.handled.get(code)
        if child is None:
            child = self.handled[code] = GRPC_HANDLED.labels(self.service, self.method, code.name)
        child.inc()
        self.latency.observe(elapsed_s)


# Per served method (only methods a handler exists for get here, so it stays as small as the API).
_METRICS: dict[str, _MethodMetrics] = {}


def _method_metrics(full_method: str) -> _MethodMetrics:
    found = _METRICS.get(full_method)
    if found is None:
        found = _METRICS[full_method] = _MethodMetrics(full_method)
    return found


class _Call:
    """Bookkeeping for one RPC: context variables in, metrics and access log out."""

    __slots__ = ("code", "deadline_token", "method", "metrics", "rid", "rid_token", "service", "start")

    def __init__(self, full_method: str, ctx: grpc.aio.ServicerContext) -> None:
        self.metrics = _method_metrics(full_method)
        self.service, self.method = self.metrics.service, self.metrics.method
        rid = ""
        for key, value in ctx.invocation_metadata() or ():
            if key == context.REQUEST_ID_HEADER:
                rid = str(value)[:128]
                break
        rid = rid or context.new_request_id()
        self.rid_token = context.set_request_id(rid)
        self.deadline_token = context.set_deadline(ctx.time_remaining())
        structlog.contextvars.bind_contextvars(request_id=rid, method=self.method)
        ctx.set_trailing_metadata(((context.REQUEST_ID_HEADER, rid),))
        self.rid = rid
        self.code = grpc.StatusCode.OK
        self.start = time.perf_counter()
        self.metrics.started.inc()

    async def fail(self, ctx: grpc.aio.ServicerContext, exc: BaseException) -> None:
        """Map an exception to a status and abort the call (always raises)."""
        if isinstance(exc, DomainError):
            self.code = exc.code
            # An error may carry trailing metadata of its own (e.g. `retry-after-ms` on a rate limit);
            # it goes out with the request id.
            extra = tuple(getattr(exc, "trailing_metadata", ()))
            if extra:
                ctx.set_trailing_metadata(((context.REQUEST_ID_HEADER, self.rid), *extra))
            await ctx.abort(exc.code, exc.message)
        if isinstance(exc, NotImplementedError):  # generated base servicers raise it
            self.code = grpc.StatusCode.UNIMPLEMENTED
            await ctx.abort(self.code, f"{self.service}/{self.method} is not implemented")
        self.code = grpc.StatusCode.INTERNAL
        log.exception("unhandled error", exc_info=exc)
        await ctx.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {context.request_id()})")

    def finish(self, ctx: grpc.aio.ServicerContext) -> None:
        elapsed = time.perf_counter() - self.start
        code = self.code
        if code is grpc.StatusCode.OK:
            # A servicer may have set a status without raising (context.set_code / abort).
            code = _context_code(ctx) or code
        self.metrics.count(code, elapsed)
        if code is grpc.StatusCode.OK:
            if debug_enabled():  # the access line of every success: nothing is built when it is off
                log.debug("rpc", code=code.name, ms=round(elapsed * 1000, 3))
        elif code in _CLIENT_CODES:
            log.info("rpc", code=code.name, ms=round(elapsed * 1000, 3), details=_context_details(ctx))
        else:
            log.error("rpc", code=code.name, ms=round(elapsed * 1000, 3), details=_context_details(ctx))
        structlog.contextvars.unbind_contextvars("request_id", "method")
        context.reset_deadline(self.deadline_token)
        context.reset_request_id(self.rid_token)


def _context_code(ctx: grpc.aio.ServicerContext) -> grpc.StatusCode | None:
    try:
        code = ctx.code()
    except Exception:
        return None
    if isinstance(code, grpc.StatusCode):
        return code
    return None


def _context_details(ctx: grpc.aio.ServicerContext) -> str:
    try:
        return str(ctx.details() or "")
    except Exception:
        return ""


class Undecodable:
    """Stands in for a request message whose bytes could not be decoded.

    grpc.aio runs a handler's request deserializer outside the handler, so an exception raised there
    (protobuf's DecodeError: truncated bytes, invalid UTF-8 in a string field, nesting beyond
    protobuf's recursion limit) never reaches the error mapping and the caller gets UNKNOWN with the
    exception's class name. The wrapped deserializer returns this marker instead; the wrapped behaviour
    turns it into INVALID_ARGUMENT inside the call's bookkeeping (metrics, access log, request id).
    """

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _message_name(deserializer: Callable[[bytes], Any]) -> str:
    """`imagesearch.v1.QueryRequest` for a generated `QueryRequest.FromString`."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "") or "the request message")


def _decoding(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    name = _message_name(deserializer)

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception as exc:  # whatever the parser raises, the bytes were not a valid message
            log.info("undecodable request", message_type=name, size=len(raw), error=repr(exc))
            return Undecodable(
                f"the request could not be decoded as {name}: its {len(raw)} bytes are not a valid "
                "serialized message (truncated, a string field that is not valid UTF-8, or messages "
                "nested deeper than protobuf's limit of 100 levels)"
            )

    return deserialize


def _encoding(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """The response serializer, passing a response that is already serialized (`bytes`, e.g. a
    cached page with this call's fields appended: protobuf merges concatenated messages) as is."""
    if serializer is None:
        return None

    def serialize(response: Any) -> bytes:
        return response if type(response) is bytes else serializer(response)

    return serialize


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A request stream whose undecodable message ends the call with INVALID_ARGUMENT."""
    async for request in requests:
        if isinstance(request, Undecodable):
            raise InvalidArgument(request.message)
        yield request


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps each method's handler once, in `_wrap`.

    The registered handlers are the same objects on every call, so the wrapped form is kept per
    method (made again only if the servicer's handler changes). A new handler per call would cost
    every call the wrapping, and defeat an outer wrapping interceptor's own per-method cache.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


def behavior_of(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    """The servicer method a handler runs, whatever its kind."""
    return handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream


def handler_like(
    handler: grpc.RpcMethodHandler,
    behavior: Callable[..., Any],
    request_deserializer: Callable[[bytes], Any] | None,
    response_serializer: Callable[[Any], bytes] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of `handler`'s kind (unary or streaming on each side) running `behavior`."""
    kw = {
        "request_deserializer": request_deserializer,
        "response_serializer": response_serializer or handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(behavior, **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(behavior, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(behavior, **kw)
    return grpc.stream_stream_rpc_method_handler(behavior, **kw)


class ServerInterceptor(WrappingInterceptor):
    """Wraps every handler with request-id/deadline context, metrics, access log and error mapping,
    and its request deserializer so an undecodable request is INVALID_ARGUMENT (see Undecodable)."""

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        wrap = _wrap_stream if handler.response_streaming else _wrap_unary
        behavior = wrap(method, behavior_of(handler), streaming_request=handler.request_streaming)
        return handler_like(
            handler,
            behavior,
            _decoding(handler.request_deserializer),
            _encoding(handler.response_serializer),
        )


def _request(request: Any, streaming_request: bool) -> Any:
    """The request as the servicer gets it: an undecodable unary request fails the call here; a
    stream's items are checked as the servicer reads them."""
    if streaming_request:
        return _checked(request)
    if isinstance(request, Undecodable):
        raise InvalidArgument(request.message)
    return request


def _wrap_unary(
    method: str, behavior: Callable[..., Any], streaming_request: bool
) -> Callable[..., Awaitable[Any]]:
    async def wrapped(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
        call = _Call(method, ctx)
        try:
            return await behavior(_request(request, streaming_request), ctx)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await call.fail(ctx, exc)
        finally:
            call.finish(ctx)

    return wrapped


def _wrap_stream(
    method: str, behavior: Callable[..., Any], streaming_request: bool
) -> Callable[..., AsyncIterator[Any]]:
    async def wrapped(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        call = _Call(method, ctx)
        try:
            result = behavior(_request(request, streaming_request), ctx)
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:  # a coroutine that writes with ctx.write()
                await result
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await call.fail(ctx, exc)
        finally:
            call.finish(ctx)

    return wrapped


class _ClientContextInterceptor:
    """Adds the current request id and the caller's remaining deadline to outgoing calls."""

    def __init__(self, default_timeout_s: float) -> None:
        self._default_timeout_s = default_timeout_s

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        rid = context.request_id()
        if rid and not any(k == context.REQUEST_ID_HEADER for k, _ in metadata):
            metadata.append((context.REQUEST_ID_HEADER, rid))
        timeout = details.timeout
        if timeout is None:
            timeout = context.remaining(self._default_timeout_s)
        return grpc.aio.ClientCallDetails(
            details.method, timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
        )


class ClientUnaryUnary(_ClientContextInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)


class ClientUnaryStream(_ClientContextInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)


class ClientStreamUnary(_ClientContextInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


class ClientStreamStream(_ClientContextInterceptor, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


def client_interceptors(default_timeout_s: float) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors for a channel to another imagesearch service (request id + deadline propagation)."""
    return [
        ClientUnaryUnary(default_timeout_s),
        ClientUnaryStream(default_timeout_s),
        ClientStreamUnary(default_timeout_s),
        ClientStreamStream(default_timeout_s),
    ]
