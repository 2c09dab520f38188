"""Domain errors of the gateway's backends: a backend's status arrives as the matching domain error.

Flows tell outcomes apart by class (`NotFound`, `Unavailable`, `DeadlineExceeded` from
services/common/errors.py), never by gRPC status codes; the prefix names the backend, and the status
reaches the caller unchanged through the one interceptor that maps domain errors.
"""

from __future__ import annotations

from typing import Any

from services.common.errors import DeadlineExceeded, DomainError, NotFound, Unavailable


class BackendError(DomainError):
    """A backend's failure, returned as precisely as it arrived. `code` is the backend's status when
    no narrower class below matches it (INVALID_ARGUMENT, INTERNAL, ...)."""

    def __init__(self, backend: str, message: str, code: Any = None) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        if code is not None:
            self.code = code


class BackendUnavailable(BackendError, Unavailable):
    """UNAVAILABLE from a backend (retryable for idempotent calls)."""


class BreakerOpen(BackendUnavailable):
    """The backend's breaker is open: failing fast without calling it (never retried)."""


class BackendNotFound(BackendError, NotFound):
    """NOT_FOUND from a backend (the search service: nothing stored yet in the tenant)."""


class BackendDeadlineExceeded(BackendError, DeadlineExceeded):
    """The backend did not answer within the call's deadline."""
