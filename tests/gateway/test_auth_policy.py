"""Authentication (API keys, HS256 tokens), authorisation, visibility filters, admission, page tokens."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import time
from collections.abc import Callable

import pytest

from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.gateway.auth import Authenticator, Keyring, TokenVerifier, sign_token
from services.gateway.domain import AllOf, AnyOf, Condition, Op
from services.gateway.paging import PageTokens, binding
from services.gateway.policy import AuditLog, Policy
from tests.gateway.fakes import asset

SECRET = b"s" * 32
KEYRING = {
    "tenants": {
        "acme": {"safety_threshold": 0.4, "allowed_licenses": ["CC-BY-4.0", "CC0-1.0"]},
        "globex": {"safety_threshold": 0.6},
    },
    "api_keys": {
        "acme-search": {"tenant": "acme", "subject": "alice", "roles": ["search"]},
        "sha256:" + hashlib.sha256(b"acme-ingest").hexdigest(): {
            "tenant": "acme",
            "subject": "bot",
            "roles": ["ingest"],
        },
        "acme-narrow": {
            "tenant": "acme",
            "subject": "carol",
            "roles": ["search", "unsafe-content"],
            "allowed_licenses": ["CC0-1.0"],
            "safety_threshold": 0.9,
        },
        "globex-admin": {"tenant": "globex", "subject": "root", "roles": ["admin"]},
    },
}


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(KEYRING, default_safety_threshold=0.5)


@pytest.fixture
def auth(keyring: Keyring) -> Authenticator:
    return Authenticator(keyring, TokenVerifier(SECRET, "imagesearch", 30, keyring))


def claims(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": "svc",
        "tenant": "globex",
        "roles": ["search"],
        "aud": "imagesearch",
        "exp": time.time() + 60,
    }
    base.update(over)
    return base


# --- API keys ---------------------------------------------------------------------------------


def test_api_key_maps_to_tenant_roles_and_tenant_policy(auth: Authenticator) -> None:
    p = auth.authenticate("Bearer acme-search")
    assert (p.subject, p.tenant, p.roles) == ("alice", "acme", frozenset({"search"}))
    assert p.allowed_licenses == frozenset({"CC-BY-4.0", "CC0-1.0"})
    assert p.safety_threshold == 0.4
    assert p.credential == "api-key"


def test_hashed_keys_verify_without_storing_the_key(auth: Authenticator) -> None:
    assert auth.authenticate("Bearer acme-ingest").subject == "bot"


def test_a_key_can_only_narrow_its_tenant(auth: Authenticator) -> None:
    p = auth.authenticate("bearer acme-narrow")
    assert p.allowed_licenses == frozenset({"CC0-1.0"})
    assert p.safety_threshold == 0.4  # the key asked for 0.9: it cannot loosen the tenant's 0.4


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic acme-search", "Bearer nope", "acme-search"])
def test_missing_or_bad_credentials_are_unauthenticated(auth: Authenticator, header: str | None) -> None:
    with pytest.raises(Unauthenticated):
        auth.authenticate(header)


def test_keyring_rejects_bad_config() -> None:
    with pytest.raises(InvalidArgument, match="unknown roles"):
        Keyring({"api_keys": {"k": {"tenant": "a", "roles": ["superuser"]}}}, 0.5)
    with pytest.raises(InvalidArgument, match="valid tenant"):
        Keyring({"api_keys": {"k": {"tenant": "a b", "roles": []}}}, 0.5)
    with pytest.raises(InvalidArgument, match="outside"):
        Keyring({"tenants": {"a": {"safety_threshold": 2}}}, 0.5)


# --- signed tokens ----------------------------------------------------------------------------


def test_valid_token(auth: Authenticator) -> None:
    p = auth.authenticate("Bearer " + sign_token(claims(licenses=["X"]), SECRET))
    assert (p.tenant, p.subject, p.credential) == ("globex", "svc", "token")
    assert p.roles == frozenset({"search"})
    assert p.allowed_licenses == frozenset({"X"})
    assert p.safety_threshold == 0.6


# Claims are built when the test runs, not at collection: a long session would otherwise see
# every token expire before its test starts.
@pytest.mark.parametrize(
    ("make_claims", "message"),
    [
        (lambda: claims(exp=time.time() - 120), "expired"),
        (lambda: claims(aud="other"), "audience"),
        (lambda: claims(tenant="../etc"), "tenant"),
        (lambda: {k: v for k, v in claims().items() if k != "exp"}, "exp"),
        (lambda: claims(nbf=time.time() + 600), "not valid yet"),
    ],
)
def test_invalid_token_claims(
    auth: Authenticator, make_claims: Callable[[], dict[str, object]], message: str
) -> None:
    with pytest.raises(Unauthenticated, match=message):
        auth.authenticate("Bearer " + sign_token(make_claims(), SECRET))


def test_token_signed_with_another_secret_or_altered_is_rejected(auth: Authenticator) -> None:
    with pytest.raises(Unauthenticated, match="signature"):
        auth.authenticate("Bearer " + sign_token(claims(), b"x" * 32))
    header, payload, sig = sign_token(claims(), SECRET).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(tenant="acme")).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="signature"):
        auth.authenticate(f"Bearer {header}.{forged}.{sig}")


def test_alg_none_is_rejected(auth: Authenticator) -> None:
    header = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated, match="HS256"):
        auth.authenticate(f"Bearer {header}.{payload}.")


def test_tokens_minted_by_pyjwt_verify(auth: Authenticator) -> None:
    jwt = pytest.importorskip("jwt")  # PyJWT is not a dependency; checked when present
    token = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert auth.authenticate(f"Bearer {token}").tenant == "globex"


def test_tokens_disabled_without_secret(keyring: Keyring) -> None:
    with pytest.raises(Unauthenticated, match="not enabled"):
        Authenticator(keyring, None).authenticate("Bearer " + sign_token(claims(), SECRET))


# --- authorisation and visibility -------------------------------------------------------------


@pytest.fixture
def audit_entries() -> list[dict[str, object]]:
    return []


@pytest.fixture
def policy(audit_entries: list[dict[str, object]]) -> Policy:
    return Policy(AuditLog(sink=audit_entries.append), license_time_granularity_s=60)


def test_authorize_allows_and_denies_with_audit(
    auth: Authenticator, policy: Policy, audit_entries: list[dict[str, object]]
) -> None:
    alice = auth.authenticate("Bearer acme-search")
    policy.authorize(alice, "search")
    with pytest.raises(PermissionDenied, match="'ingest' role"):
        policy.authorize(alice, "ingest")
    with pytest.raises(PermissionDenied):
        policy.authorize(alice, "delete_asset", target="a1")
    assert [(e["who"], e["action"], e["decision"]) for e in audit_entries] == [
        ("alice", "search", "allow"),
        ("alice", "ingest", "deny"),
        ("alice", "delete_asset", "deny"),
    ]
    assert audit_entries[2]["target"] == "a1" and "missing role" in str(audit_entries[2]["why"])
    root = auth.authenticate("Bearer globex-admin")
    for action in ("search", "ingest", "delete_asset", "get_asset"):
        policy.authorize(root, action)


def test_visibility_filter_has_licences_expiry_and_safety(auth: Authenticator, policy: Policy) -> None:
    alice = auth.authenticate("Bearer acme-search")
    now = dt.datetime(2025, 1, 1, 12, 0, 59, tzinfo=dt.UTC)
    vis = policy.visibility(alice, "search", now=now)
    f = vis.filter(60)
    assert isinstance(f, AllOf)
    expiry, licences, safety = f.filters
    assert isinstance(expiry, AnyOf)
    assert expiry.filters[0] == Condition("license_expires_at", Op.IS_NULL, True)
    # `now` rounded down to the minute: the same filter (and cache key) for a whole minute.
    assert expiry.filters[1] == Condition(
        "license_expires_at", Op.GREATER_THAN, dt.datetime(2025, 1, 1, 12, 0, tzinfo=dt.UTC)
    )
    assert licences == Condition("license_name", Op.IN, ("CC-BY-4.0", "CC0-1.0"))
    assert safety == Condition("safety_score", Op.LESS_THAN_OR_EQUAL, 0.4)
    assert vis.filter(60) == policy.visibility(alice, "search", now=now - dt.timedelta(seconds=30)).filter(60)


def test_requested_licences_are_intersected_or_denied(auth: Authenticator, policy: Policy) -> None:
    alice = auth.authenticate("Bearer acme-search")
    vis = policy.visibility(alice, "search", requested_licenses=["CC0-1.0", "GPL"])
    assert vis.licenses == frozenset({"CC0-1.0"})
    with pytest.raises(PermissionDenied, match="none of the requested licences"):
        policy.visibility(alice, "search", requested_licenses=["GPL"])
    root = auth.authenticate("Bearer globex-admin")  # tenant allows any licence
    assert policy.visibility(root, "search").licenses is None
    assert policy.visibility(root, "search", requested_licenses=["GPL"]).licenses == frozenset({"GPL"})


def test_include_unsafe_needs_the_role(auth: Authenticator, policy: Policy) -> None:
    alice = auth.authenticate("Bearer acme-search")
    with pytest.raises(PermissionDenied, match="unsafe-content"):
        policy.visibility(alice, "search", include_unsafe=True)
    carol = auth.authenticate("Bearer acme-narrow")
    vis = policy.visibility(carol, "search", include_unsafe=True)
    assert vis.safety_threshold is None
    assert all(
        not (isinstance(c, Condition) and c.field == "safety_score")
        for c in vis.filter(60).filters  # type: ignore[union-attr]
    )


def test_admit_rechecks_every_rule(auth: Authenticator, policy: Policy) -> None:
    alice = auth.authenticate("Bearer acme-search")
    now = dt.datetime(2025, 1, 1, 12, 0, 30, tzinfo=dt.UTC)
    vis = policy.visibility(alice, "search", now=now)
    ok, reasons = policy.admit(vis, asset("a", safety=0.1))
    assert ok and reasons[0] == "tenant acme" and "CC-BY-4.0 allowed, no expiry" in reasons[1]
    assert "0.10 <= threshold 0.40" in reasons[2]
    assert policy.admit(vis, asset("b", tenant="globex"))[0] is False
    assert policy.admit(vis, asset("c", license_name="GPL"))[0] is False
    assert policy.admit(vis, asset("d", safety=0.41))[0] is False
    # expired 10 s ago: inside the filter's rounding window, caught by the exact re-check
    expired = asset("e", expires=now - dt.timedelta(seconds=10))
    assert policy.admit(vis, expired) == (
        False,
        [f"licence CC-BY-4.0 expired at {expired.license_expires_at.isoformat()}"],  # type: ignore[union-attr]
    )
    ok, reasons = policy.admit(vis, asset("f", expires=now + dt.timedelta(days=1)))
    assert ok and "valid until" in reasons[1]


def test_screen_drops_and_audits(
    auth: Authenticator, policy: Policy, audit_entries: list[dict[str, object]]
) -> None:
    alice = auth.authenticate("Bearer acme-search")
    vis = policy.visibility(alice, "search")
    admitted = policy.screen(alice, "search", vis, [asset("a"), asset("x", tenant="globex"), asset("b")])
    assert admitted == [0, 2]
    denies = [e for e in audit_entries if e["decision"] == "deny"]
    assert len(denies) == 1 and denies[0]["asset_id"] == "x" and "tenant" in str(denies[0]["why"])
    assert audit_entries[-1]["admitted"] == 2 and audit_entries[-1]["dropped"] == 1


# --- page tokens ------------------------------------------------------------------------------


def test_page_tokens_roundtrip_and_binding() -> None:
    tokens = PageTokens(b"k" * 32)
    b1 = binding("search", "acme", "cats", 20)
    b2 = binding("search", "globex", "cats", 20)
    t = tokens.issue(b1, 40)
    assert tokens.offset(t, b1) == 40
    assert tokens.offset("", b1) == 0
    with pytest.raises(InvalidArgument, match="different query or caller"):
        tokens.offset(t, b2)
    payload, mac = t.split(".")
    tampered = base64.urlsafe_b64encode(json.dumps({"v": 1, "o": 0, "b": b1}).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidArgument, match="altered"):
        tokens.offset(f"{tampered}.{mac}", b1)
    with pytest.raises(InvalidArgument):
        PageTokens(b"other" * 8).offset(t, b1)
    with pytest.raises(InvalidArgument):
        tokens.offset("garbage", b1)
    for hostile in ("é.é", f"{payload}.{mac}\u00e9", "\x00.\x00", "a" * 10_000 + "." + "ü"):
        with pytest.raises(InvalidArgument, match="page_token"):  # never a TypeError (INTERNAL)
            tokens.offset(hostile, b1)
