"""Opaque, tamper-evident page tokens bound to one query and one caller.

A token is base64url(JSON {v, o: offset, b: binding}) + "." + base64url(HMAC-SHA256[:16]). The
binding is a digest of the tenant, the caller's visibility and the canonical query (text, image
digest, filters, alpha, rerank options, page size), so a token replayed with another query or by
another tenant is rejected instead of returning a page of something else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

from services.common.errors import InvalidArgument

_VERSION = 1


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def binding(*parts: Any) -> str:
    """A stable digest of JSON-able parts (the query and caller a token belongs to)."""
    raw = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class PageTokens:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def _mac(self, payload: str) -> str:
        return _b64e(hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()[:16])

    def issue(self, bound_to: str, offset: int) -> str:
        payload = _b64e(
            json.dumps({"v": _VERSION, "o": offset, "b": bound_to}, separators=(",", ":")).encode()
        )
        return f"{payload}.{self._mac(payload)}"

    def offset(self, token: str, bound_to: str) -> int:
        """The offset a token points at; 0 for an empty token. INVALID_ARGUMENT when it does not verify."""
        if not token:
            return 0
        payload, _, mac = token.partition(".")
        # Compared as bytes: compare_digest refuses str with non-ASCII characters (a TypeError, which
        # reached the caller as INTERNAL for a token it had typed by hand).
        if not mac or not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise InvalidArgument("page_token is invalid or was altered; start again without a page_token")
        try:
            data = json.loads(_b64d(payload))
        except (binascii.Error, ValueError):
            raise InvalidArgument("page_token is malformed; start again without a page_token") from None
        if data.get("v") != _VERSION or not isinstance(data.get("o"), int) or data["o"] < 0:
            raise InvalidArgument(
                "page_token is from an incompatible version; start again without a page_token"
            )
        if data.get("b") != bound_to:
            raise InvalidArgument(
                "page_token belongs to a different query or caller; send the same query and filters "
                "as the first page, or start again without a page_token"
            )
        return int(data["o"])
