"""The encoder's per-process pixel budget: decoded pixels in flight and concurrent decoding calls capped.

Decoding dominates an image's memory and CPU (a 36-megapixel image is ~100 MB of RGB before it is
resized to the model's input), so a few huge images could starve every other caller. Each call reserves
the pixels its images declare in their headers (read without decoding) before decoding them; a call
that cannot get its share within a short wait is answered RESOURCE_EXHAUSTED with `retry-after-ms`
trailing metadata (the gateway's rate-limit convention), so well-behaved clients back off. Small calls
fit beside big ones, so they keep being served. A call larger than the whole budget runs alone.
"""

from __future__ import annotations

import asyncio
import io
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from PIL import Image

from services.common.errors import ResourceExhausted
from services.encoder.domain import ImageItem
from services.encoder.settings import EncoderSettings

RETRY_AFTER_HEADER = "retry-after-ms"  # same metadata key as the gateway's rate limiter


class BudgetExhausted(ResourceExhausted):
    """RESOURCE_EXHAUSTED with `retry-after-ms` trailing metadata (the server interceptor sends it)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.trailing_metadata: tuple[tuple[str, str], ...] = (
            (RETRY_AFTER_HEADER, str(max(1, math.ceil(retry_after_s * 1000)))),
        )


def declared_pixels(data: bytes) -> int:
    """Width x height from the image header (no decoding); 0 when unreadable, since decoding then
    fails at once with its own precise error and costs nothing."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # any unreadable header: the decoder reports it to the caller
        return 0
    return int(width) * int(height)


class PixelBudget:
    """Admission control for decoding. `max_pixels=None` and `max_calls=None` mean unlimited."""

    def __init__(
        self, max_pixels: int | None, max_calls: int | None, wait_s: float, retry_after_s: float
    ) -> None:
        self.max_pixels = max_pixels
        self.max_calls = max_calls
        self.wait_s = wait_s
        self.retry_after_s = retry_after_s
        self.pixels_in_flight = 0
        self.calls_in_flight = 0
        self._changed = asyncio.Condition()

    @classmethod
    def from_settings(cls, settings: EncoderSettings) -> PixelBudget:
        return cls(
            settings.budget_max_pixels_in_flight or None,
            settings.budget_max_concurrent_calls or None,
            settings.budget_wait_s,
            settings.budget_retry_after_s,
        )

    @classmethod
    def unlimited(cls) -> PixelBudget:
        return cls(None, None, 0.0, 0.0)

    def _fits(self, pixels: int) -> bool:
        if self.max_calls is not None and self.calls_in_flight >= self.max_calls:
            return False
        if self.max_pixels is None or self.pixels_in_flight == 0:
            return True  # an idle process admits any call, even one above the whole budget
        return self.pixels_in_flight + pixels <= self.max_pixels

    @asynccontextmanager
    async def reserve(self, items: Sequence[ImageItem]) -> AsyncIterator[None]:
        """Hold the items' declared pixels (and one call slot) while the body decodes them."""
        if self.max_pixels is None and self.max_calls is None:
            yield
            return
        pixels = sum(declared_pixels(item.data) for item in items)
        if self.max_pixels is not None:
            pixels = min(pixels, self.max_pixels)
        deadline = time.monotonic() + self.wait_s
        async with self._changed:
            while not self._fits(pixels):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BudgetExhausted(self._busy_message(pixels), self.retry_after_s)
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except TimeoutError:
                    continue  # the loop re-checks, then answers RESOURCE_EXHAUSTED
            self.pixels_in_flight += pixels
            self.calls_in_flight += 1
        try:
            yield
        finally:
            async with self._changed:
                self.pixels_in_flight -= pixels
                self.calls_in_flight -= 1
                self._changed.notify_all()

    def _busy_message(self, pixels: int) -> str:
        if self.max_calls is not None and self.calls_in_flight >= self.max_calls:
            busy = f"{self.calls_in_flight} calls are decoding images (the limit is {self.max_calls})"
        else:
            busy = (
                f"{self.pixels_in_flight / 1e6:.1f} megapixels are being decoded and this call needs "
                f"{pixels / 1e6:.1f} more (the budget is {(self.max_pixels or 0) / 1e6:.1f})"
            )
        return (
            f"the encoder is busy: {busy}; retry after {self.retry_after_s:.1f} s, or send smaller or "
            "fewer images per call"
        )
