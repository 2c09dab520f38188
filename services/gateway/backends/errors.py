"""Domain errors of the gateway's backends: a backend's status arrives as the matching domain error.

Flows tell outcomes apart by class (`NotFound`, `Unavailable`, `DeadlineExceeded` from
services/common/errors.py), never by gRPC status codes.

Two texts per error: `message` ("search: <the backend's details>") is for logs and tests and may hold
anything the backend or the gRPC library said (addresses, exception class names, library wording);
`public` is what a caller may read: the backend's own message only for a rejection the caller can act
on, cut before any exception class name, and a plain sentence otherwise. `for_caller()` is the error
the gateway returns (same status, public message).
"""

from __future__ import annotations

import re
from typing import Any

from services.common.errors import DeadlineExceeded, DomainError, NotFound, Unavailable

# An exception class name ("ValueError", "UnidentifiedImageError", "OSError") and everything after it.
_EXCEPTION_NAME = re.compile(r"[\s:;,(\[]*\b[A-Za-z_][A-Za-z0-9_]*(?:Error|Exception|Warning)\b.*", re.S)


def caller_safe(text: str, fallback: str = "no reason given") -> str:
    """A backend's message as a caller may read it: cut before the first exception class name (what
    follows one is a library's wording, not the service's); `fallback` when nothing is left."""
    return _EXCEPTION_NAME.sub("", text).strip(" :;,(") or fallback


class BackendError(DomainError):
    """A backend's failure, returned as precisely as it arrived. `code` is the backend's status when
    no narrower class below matches it (INVALID_ARGUMENT, INTERNAL, ...)."""

    def __init__(self, backend: str, message: str, code: Any = None, public: str | None = None) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        if code is not None:
            self.code = code
        self.public = public or caller_safe(message, f"the {backend} service rejected the request")

    def for_caller(self) -> DomainError:
        """The same status with the public message (the servicer returns this)."""
        out = DomainError(self.public)
        out.code = self.code
        return out


class BackendUnavailable(BackendError, Unavailable):
    """UNAVAILABLE from a backend (retryable for idempotent calls)."""


class BreakerOpen(BackendUnavailable):
    """The backend's breaker is open: failing fast without calling it (never retried)."""


class BackendNotFound(BackendError, NotFound):
    """NOT_FOUND from a backend (the search service: nothing stored yet in the tenant)."""


class BackendDeadlineExceeded(BackendError, DeadlineExceeded):
    """The backend did not answer within the call's deadline."""


def public_message(exc: DomainError) -> str:
    """What a caller may read of a domain error (a backend's, or the gateway's own)."""
    return exc.public if isinstance(exc, BackendError) else exc.message
