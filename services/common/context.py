"""Per-call context that travels across hops: the request id and the caller's deadline.

The server interceptor sets both when a call arrives; client code reads them when it calls the next
hop (another service, Triton, Weaviate, Redis), so a deadline set by the outermost caller bounds
every backend call made on its behalf.
"""

from __future__ import annotations

import contextvars
import random
import time

from services.common.errors import DeadlineExceeded

REQUEST_ID_HEADER = "x-request-id"

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


# A request id only has to be unique, not secret: 128 bits from a generator seeded from the OS
# once per process, instead of a system call per request (uuid4).
_ids = random.Random()


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


def request_id() -> str:
    return _request_id.get()


def set_request_id(value: str) -> contextvars.Token[str]:
    return _request_id.set(value)


def reset_request_id(token: contextvars.Token[str]) -> None:
    _request_id.reset(token)


def set_deadline(seconds_from_now: float | None) -> contextvars.Token[float | None]:
    """Record the current call's deadline (None = the caller set none)."""
    value = None if seconds_from_now is None else time.monotonic() + seconds_from_now
    return _deadline.set(value)


def reset_deadline(token: contextvars.Token[float | None]) -> None:
    _deadline.reset(token)


def remaining(default: float) -> float:
    """Seconds left for a backend call: the caller's remaining deadline, capped at `default`.

    Raises DeadlineExceeded when the caller's deadline has already passed, so no backend call is
    started that could not finish in time.
    """
    deadline = _deadline.get()
    if deadline is None:
        return default
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded("the caller's deadline expired before the backend call")
    return min(left, default)
