"""Skipping an optional backend for a while after it failed.

The suite's optional backends (Redis under the result cache and the rate limits, the feedback store)
must not cost every call a timeout while they are down: after a failure their users skip them for
`retry_after_s`, then try again. One outage then costs one timeout per window, not one per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SkipWindow:
    """Whether to try a backend now; `failed` opens a window of `retry_after_s` without it."""

    def __init__(self, retry_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._skip_until = 0.0
        self._down = False

    def usable(self) -> bool:
        """True unless a failure's window is still open."""
        return self._clock() >= self._skip_until

    @property
    def down(self) -> bool:
        """True from a failure until the next success (the window may have closed meanwhile)."""
        return self._down

    def failed(self) -> bool:
        """Record a failure (re-opening the window); True when it starts an outage (log it once)."""
        started = not self._down
        self._down = True
        self._skip_until = self._clock() + self.retry_after_s
        return started

    def ok(self) -> bool:
        """Record a success (closing any window); True when it ends an outage."""
        ended = self._down
        self._down = False
        self._skip_until = 0.0
        return ended
