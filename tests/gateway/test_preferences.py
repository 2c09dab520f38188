"""The preference boost's recent-click sets: cached per caller with a TTL, dropped when the caller
records feedback, empty (not an error) when the store fails, off unless configured."""

from __future__ import annotations

import asyncio

from services.common.errors import Unavailable
from services.gateway.auth import Principal
from services.gateway.preferences import NO_PREFERENCES, CallerPreferences, personal_key
from services.gateway.settings import GatewaySettings

ALICE = Principal("alice", "acme", frozenset({"search"}), 0.5, None, "api-key")
BOB = Principal("bob", "acme", frozenset({"search"}), 0.5, None, "api-key")


class _Clicks:
    """Answers recent_clicks from a dict and counts the reads (a pure-logic stand-in for the store)."""

    def __init__(self, clicks: dict[tuple[str, str], list[str]]) -> None:
        self.clicks = clicks
        self.reads = 0
        self.down = False

    async def recent_clicks(self, tenant: str, caller: str) -> list[str]:
        self.reads += 1
        if self.down:
            raise Unavailable("the feedback store is unavailable")
        return list(self.clicks.get((tenant, caller), []))


def _prefs(store: _Clicks, ttl_s: float = 60.0) -> CallerPreferences:
    return CallerPreferences(store, 0.1, ttl_s, 100)  # type: ignore[arg-type]


def test_each_caller_gets_its_own_set_read_once_per_ttl() -> None:
    store = _Clicks({("acme", "alice"): ["a1", "a2", "a1"]})
    prefs = _prefs(store)

    async def body() -> None:
        assert await prefs.clicked(ALICE) == frozenset({"a1", "a2"})
        assert await prefs.clicked(ALICE) == frozenset({"a1", "a2"})
        assert store.reads == 1
        assert await prefs.clicked(BOB) == NO_PREFERENCES
        store.clicks[("acme", "alice")].append("a3")
        assert await prefs.clicked(ALICE) == frozenset({"a1", "a2"})  # cached
        prefs.forget(ALICE)  # alice recorded feedback: her next search reads afresh
        assert await prefs.clicked(ALICE) == frozenset({"a1", "a2", "a3"})

    asyncio.run(body())


def test_a_failing_store_personalises_nothing_and_is_asked_again() -> None:
    store = _Clicks({("acme", "alice"): ["a1"]})
    store.down = True
    prefs = _prefs(store)

    async def body() -> None:
        assert await prefs.clicked(ALICE) == NO_PREFERENCES
        store.down = False
        assert await prefs.clicked(ALICE) == frozenset({"a1"})

    asyncio.run(body())


def test_off_by_default_and_without_a_feedback_store() -> None:
    store = _Clicks({})
    assert CallerPreferences.from_settings(store, GatewaySettings()) is None  # type: ignore[arg-type]
    on = GatewaySettings(preference_boost_weight=0.05)
    assert CallerPreferences.from_settings(None, on) is None
    made = CallerPreferences.from_settings(store, on)  # type: ignore[arg-type]
    assert made is not None and made.weight == 0.05


def test_personal_pages_are_keyed_by_the_set_and_shared_pages_by_nothing() -> None:
    assert personal_key(NO_PREFERENCES) == ""
    assert personal_key(frozenset({"a", "b"})) == personal_key(frozenset({"b", "a"}))
    assert personal_key(frozenset({"a"})) != personal_key(frozenset({"a", "b"}))
