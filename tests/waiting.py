"""Reading state that other processes update in the background (counters, logs written off the request
path): once it has stopped changing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def settled(
    read: Callable[[], T],
    measure: Callable[[T], Any] = lambda value: value,
    interval_s: float = 0.3,
    timeout_s: float = 15.0,
) -> T:
    """`read()` once two reads `interval_s` apart agree (compared by `measure`); the last read when
    it is still changing after `timeout_s`."""
    last = read()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(interval_s)
        now = read()
        if measure(now) == measure(last):
            return now
        last = now
    return last
