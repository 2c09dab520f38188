"""The session store (pure logic): signed ids, fixation, and anonymous sessions kept apart."""

from __future__ import annotations

from services.console.sessions import SessionStore


def test_sign_in_issues_a_fresh_id_and_forgets_the_anonymous_one() -> None:
    store = SessionStore(b"k" * 32, ttl_s=60, max_sessions=10)
    anonymous_id, _ = store.create()
    signed_id = store.sign_in(anonymous_id, "key-1")
    assert signed_id != anonymous_id
    assert store.load(store.cookie_value(anonymous_id)) is None
    loaded = store.load(store.cookie_value(signed_id))
    assert loaded is not None and loaded[1].api_key == "key-1"


def test_a_forged_or_foreign_cookie_loads_nothing() -> None:
    store = SessionStore(b"k" * 32, ttl_s=60, max_sessions=10)
    other = SessionStore(b"x" * 32, ttl_s=60, max_sessions=10)
    signed_id = store.sign_in(store.create()[0], "key-1")
    assert store.load(signed_id) is None  # unsigned id
    assert store.load(other.cookie_value(signed_id)) is None  # signed with another secret
    assert store.load(store.cookie_value(signed_id)[:-2] + "xx") is None


def test_a_flood_of_sign_in_forms_evicts_no_signed_in_session() -> None:
    store = SessionStore(b"k" * 32, ttl_s=60, max_sessions=3)
    signed_id = store.sign_in(store.create()[0], "key-1")
    for _ in range(100):
        store.create()
    assert store.load(store.cookie_value(signed_id)) is not None


def test_a_session_keeps_only_its_latest_query_images() -> None:
    store = SessionStore(b"k" * 32, ttl_s=60, max_sessions=3)
    session = store.load(store.cookie_value(store.sign_in(store.create()[0], "key-1")))
    assert session is not None
    refs = [session[1].keep_query_image(bytes([i])) for i in range(5)]
    assert list(session[1].query_images) == refs[-2:]
