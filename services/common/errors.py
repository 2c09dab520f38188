"""Domain errors: raised once by domain code, mapped to a gRPC status in one place (the interceptor).

Domain code never imports grpc to fail a call; it raises one of these with a message the caller can
act on. Per-item failures inside a batch are reported with the same classes via `item_error()`.
"""

from __future__ import annotations

import grpc


class DomainError(Exception):
    """Base class: a failure with a precise gRPC status code and an actionable message."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DomainError):
    """A concurrent change made this operation's input stale (re-read and retry)."""

    code = grpc.StatusCode.ABORTED


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


def status_number(code: grpc.StatusCode) -> int:
    """The canonical numeric code (google.rpc.Code) of a grpc.StatusCode, as carried by ItemError."""
    return int(code.value[0])
