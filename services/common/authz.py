"""Per-method authorisation of internal callers by the identity in their verified client certificate.

Installed by the server bootstrap when a service serves mutual TLS: the handshake has already proved
that the caller holds a certificate from the suite CA; this decides what that identity may call, from
the `allowed_callers` policy in settings. It sits inside the shared ServerInterceptor, so a denial is
logged, counted and carries the request id like any other failed call.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc

from services.common.errors import PermissionDenied, Unauthenticated
from services.common.tls import peer_identity

ANY_IDENTITY = "*"


class CallerPolicy:
    """`{"pkg.Service/Method" | "pkg.Service/*": [identity, ...]}`; the exact method wins over the
    service's wildcard; a method listed nowhere is denied to everyone."""

    def __init__(self, allowed: Mapping[str, Sequence[str]]) -> None:
        self._allowed = {key: frozenset(ids) for key, ids in allowed.items()}
        self._cache: dict[str, frozenset[str]] = {}

    def allowed(self, full_method: str) -> frozenset[str]:
        """The identities allowed to call `/pkg.Service/Method`."""
        ids = self._cache.get(full_method)
        if ids is None:
            path = full_method.lstrip("/")
            service = path.split("/", 1)[0]
            ids = self._allowed.get(path, self._allowed.get(f"{service}/*", frozenset()))
            self._cache[full_method] = ids
        return ids

    def check(self, full_method: str, identity: str | None) -> None:
        """Raise PermissionDenied (or Unauthenticated without an identity) unless the call is allowed."""
        if identity is None:
            raise Unauthenticated("this service requires a client certificate from the suite's CA")
        ids = self.allowed(full_method)
        if identity in ids or ANY_IDENTITY in ids:
            return
        service, method = full_method.lstrip("/").split("/", 1)
        raise PermissionDenied(
            f"identity {identity} may not call {service.rsplit('.', 1)[-1]}/{method} "
            "(allowed_callers in this service's settings says who may)"
        )


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """Checks the caller's certificate identity against the policy before the handler runs."""

    def __init__(self, policy: CallerPolicy) -> None:
        self._policy = policy
        # Per method: the servicer's handler and its checked form, built once. A new handler per call
        # would also defeat the outer ServerInterceptor's own per-method cache (it re-wrapped every
        # call of an internal service under mutual TLS).
        self._checked: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._checked.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        checked = self._check(method, handler)
        self._checked[method] = (handler, checked)
        return checked

    def _check(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        policy = self._policy

        def check(ctx: grpc.aio.ServicerContext) -> None:
            policy.check(method, peer_identity(ctx.auth_context()))

        kw = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_unary(check, handler.unary_unary), **kw)
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_unary(check, handler.stream_unary), **kw)
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_stream(check, handler.unary_stream), **kw)
        return grpc.stream_stream_rpc_method_handler(_stream(check, handler.stream_stream), **kw)


def _unary(
    check: Callable[[grpc.aio.ServicerContext], None], behavior: Callable[..., Any]
) -> Callable[..., Awaitable[Any]]:
    async def checked(request: Any, ctx: grpc.aio.ServicerContext) -> Any:
        check(ctx)
        return await behavior(request, ctx)

    return checked


def _stream(
    check: Callable[[grpc.aio.ServicerContext], None], behavior: Callable[..., Any]
) -> Callable[..., AsyncIterator[Any]]:
    async def checked(request: Any, ctx: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        check(ctx)
        result = behavior(request, ctx)
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        else:  # a coroutine that writes with ctx.write()
            await result

    return checked
