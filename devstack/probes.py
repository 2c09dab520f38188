"""Readiness probes on loopback, with the standard library only."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

from devstack.common import HOST


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    # A developer's *_proxy variables must not send loopback probes to a proxy.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(
    url: str, *, method: str = "GET", body: bytes | None = None, timeout: float = 2.0
) -> int | None:
    """HTTP status of a loopback request, or None when nothing answered."""
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with _no_proxy_opener().open(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


def http_json(url: str, *, method: str = "GET", body: bytes | None = None, timeout: float = 2.0) -> Any:
    """The decoded JSON body of a loopback request (raises OSError/ValueError on failure)."""
    req = urllib.request.Request(url, data=body, method=method)
    with _no_proxy_opener().open(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def tcp_open(port: int, timeout: float = 1.0) -> bool:
    """Does something accept connections on this loopback port?"""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False
