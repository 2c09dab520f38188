"""SkipWindow: the one "skip an optional backend for a while after a failure" rule (pure logic)."""

from __future__ import annotations

from services.common.outage import SkipWindow


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failure_skips_the_backend_for_the_window_then_allows_a_retry() -> None:
    clock = Clock()
    window = SkipWindow(2.0, clock)
    assert window.usable() and not window.down
    assert window.failed() is True  # starts the outage
    assert not window.usable() and window.down
    clock.now += 1.9
    assert not window.usable()
    clock.now += 0.2
    assert window.usable() and window.down  # retry allowed; still down until a success
    assert window.failed() is False  # the same outage: not logged again
    assert not window.usable()


def test_a_success_ends_the_outage_once() -> None:
    clock = Clock()
    window = SkipWindow(5.0, clock)
    assert window.ok() is False  # nothing to end
    window.failed()
    assert window.ok() is True
    assert window.usable() and not window.down
    assert window.ok() is False
