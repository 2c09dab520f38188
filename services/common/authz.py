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
from services.common.interceptors import WrappingInterceptor, behavior_of, handler_like
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


class AuthorizationInterceptor(WrappingInterceptor):
    """Checks the caller's certificate identity against the policy before the handler runs."""

    def __init__(self, policy: CallerPolicy) -> None:
        super().__init__()
        self._policy = policy

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        policy = self._policy

        def check(ctx: grpc.aio.ServicerContext) -> None:
            policy.check(method, peer_identity(ctx.auth_context()))

        wrap = _stream if handler.response_streaming else _unary
        return handler_like(handler, wrap(check, behavior_of(handler)), handler.request_deserializer)


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
