"""Hashed API keys (ids, expiry, revocation, rotation), the key tool, and RS256/ES256 tokens from a JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.common.errors import InvalidArgument, Unauthenticated
from services.gateway import keys as keytool
from services.gateway.auth import (
    INVALID_KEY,
    Authenticator,
    JwksKeys,
    Keyring,
    TokenVerifier,
    _ScryptHash,
    hash_secret,
    present_key,
    sign_token,
)

REPO = Path(__file__).resolve().parents[2]
NOW = time.time()
TENANTS = {"acme": {"safety_threshold": 0.4, "allowed_licenses": ["CC0-1.0"]}}


def entry(secret: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "hash": hash_secret(secret, log2_n=10),  # cheap parameters keep the tests fast
        "tenant": "acme",
        "subject": "alice",
        "roles": ["search"],
        "not_after": "2999-01-01T00:00:00Z",
    }
    base.update(over)
    return base


@pytest.fixture
def ring() -> Keyring:
    return Keyring(
        {
            "tenants": TENANTS,
            "api_keys": {
                "aaaa0001": entry("s3cret-one"),
                "aaaa0002": entry("s3cret-two", not_after="2000-01-01T00:00:00Z"),
                "aaaa0003": entry("s3cret-three", revoked_at="2024-01-01T00:00:00Z"),
                "aaaa0004": entry("s3cret-four", not_after=None, roles=["ingest"], subject="bot"),
            },
        },
        0.5,
    )


def auth_key(ring: Keyring, key: str) -> Any:
    return Authenticator(ring, None).authenticate(f"Bearer {key}")


# --- hashed API keys --------------------------------------------------------------------------


def test_hashed_key_verifies_to_its_principal(ring: Keyring) -> None:
    p = auth_key(ring, present_key("aaaa0001", "s3cret-one"))
    assert (p.subject, p.tenant, p.roles, p.credential) == ("alice", "acme", frozenset({"search"}), "api-key")
    assert p.allowed_licenses == frozenset({"CC0-1.0"}) and p.safety_threshold == 0.4
    assert auth_key(ring, present_key("aaaa0004", "s3cret-four")).subject == "bot"  # no expiry


@pytest.mark.parametrize(
    "key",
    [
        present_key("aaaa0001", "wrong"),  # wrong secret
        present_key("bbbb0001", "s3cret-one"),  # unknown id: the same answer, nothing revealed
        present_key("aaaa0002", "wrong"),  # expired, but the caller does not hold it
        present_key("aaaa0003", "wrong"),  # revoked, likewise
        "isk_aaaa0001",  # no secret
        "isk_AAAA0001_s3cret-one",  # not an id
        "s3cret-one",
    ],
)
def test_bad_keys_are_unauthenticated_with_one_message(ring: Keyring, key: str) -> None:
    with pytest.raises(Unauthenticated) as exc:
        auth_key(ring, key)
    assert exc.value.message == INVALID_KEY


def test_expired_and_revoked_are_said_only_to_the_holder(ring: Keyring) -> None:
    with pytest.raises(Unauthenticated, match="^the API key has expired$"):
        auth_key(ring, present_key("aaaa0002", "s3cret-two"))
    with pytest.raises(Unauthenticated, match="^the API key has been revoked$"):
        auth_key(ring, present_key("aaaa0003", "s3cret-three"))


def test_expiry_is_checked_on_every_call_even_when_cached() -> None:
    ring = Keyring({"api_keys": {"cccc0001": entry("x", not_after=NOW + 100)}}, 0.5)
    key = present_key("cccc0001", "x")
    assert ring.authenticate_key(key, now=NOW).subject == "alice"
    with pytest.raises(Unauthenticated, match="expired"):
        ring.authenticate_key(key, now=NOW + 100)


def test_verified_keys_skip_scrypt_and_wrong_secrets_never_hit_the_cache(
    ring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = _ScryptHash.matches

    def counting(self: _ScryptHash, secret: str) -> bool:
        calls.append(secret)
        return real(self, secret)

    monkeypatch.setattr(_ScryptHash, "matches", counting)
    good = present_key("aaaa0001", "s3cret-one")
    for _ in range(5):
        auth_key(ring, good)
    assert len(calls) == 1
    for _ in range(3):  # a cached good key does not let a wrong secret through; repeats are cheap too
        with pytest.raises(Unauthenticated):
            auth_key(ring, present_key("aaaa0001", "s3cret-onf"))
    assert len(calls) == 2


async def test_a_keys_scrypt_check_runs_off_the_event_loop(
    ring: Keyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    threads: list[threading.Thread] = []
    real = _ScryptHash.matches

    def recording(self: _ScryptHash, secret: str) -> bool:
        threads.append(threading.current_thread())
        return real(self, secret)

    monkeypatch.setattr(_ScryptHash, "matches", recording)
    auth = Authenticator(ring, None)
    good = present_key("aaaa0001", "s3cret-one")
    assert ring.needs_hashing(good)
    assert (await auth.authenticate_async(f"Bearer {good}")).subject == "alice"
    assert threads and threads[0] is not threading.main_thread()
    assert not ring.needs_hashing(good)  # memoised: the next call is checked inline
    assert (await auth.authenticate_async(f"Bearer {good}")).subject == "alice"
    assert len(threads) == 1
    wrong = present_key("aaaa0001", "s3cret-onf")
    with pytest.raises(Unauthenticated, match=INVALID_KEY):
        await auth.authenticate_async(f"Bearer {wrong}")
    assert threads[1] is not threading.main_thread()
    assert not ring.needs_hashing(wrong)  # the same wrong secret is refused from memory
    assert not ring.needs_hashing(present_key("ffff0000", "x"))  # unknown id: no hash to run


def test_rotation_two_keys_for_one_subject_both_work() -> None:
    ring = Keyring(
        {
            "api_keys": {
                "old00001": entry("old-secret", not_after=NOW + 3600),
                "new00001": entry("new-secret", not_after=NOW + 90 * 86400),
            }
        },
        0.5,
    )
    old = auth_key(ring, present_key("old00001", "old-secret"))
    new = auth_key(ring, present_key("new00001", "new-secret"))
    assert old == new  # the same principal either way
    with pytest.raises(Unauthenticated):  # secrets are not interchangeable between ids
        auth_key(ring, present_key("new00001", "old-secret"))


def test_legacy_entries_still_load(caplog: pytest.LogCaptureFixture) -> None:
    ring = Keyring(
        {
            "api_keys": {
                "plain-key": {"tenant": "acme", "subject": "p", "roles": ["search"]},
                "sha256:" + hashlib.sha256(b"digest-key").hexdigest(): {"tenant": "acme", "roles": []},
            }
        },
        0.5,
    )
    assert auth_key(ring, "plain-key").subject == "p"
    assert auth_key(ring, "digest-key").tenant == "acme"
    assert "plain text" in caplog.text and "plain-key" not in caplog.text


def test_bad_hashed_entries_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="scrypt"):
        Keyring({"api_keys": {"dddd0001": {"hash": "md5$abc", "tenant": "a"}}}, 0.5)
    with pytest.raises(InvalidArgument, match="out of range"):  # no 2**40 work factor from a keyring
        Keyring(
            {"api_keys": {"dddd0001": {"hash": "scrypt$40$8$1$" + "A" * 22 + "$" + "A" * 43, "tenant": "a"}}},
            0.5,
        )
    with pytest.raises(InvalidArgument, match="key id"):
        Keyring({"api_keys": {"Bad_Id": entry("x")}}, 0.5)
    with pytest.raises(InvalidArgument, match="timestamp"):
        Keyring({"api_keys": {"dddd0001": entry("x", not_after="next tuesday")}}, 0.5)


def test_the_shipped_demo_keyring_keeps_the_demo_keys_and_no_secret() -> None:
    path = REPO / "services" / "gateway" / "demo_keys.json"
    ring = Keyring.load(path, None, 0.5)
    p = auth_key(ring, "demo-key")
    assert (p.tenant, p.subject) == ("demo", "demo-user")
    assert auth_key(ring, "other-key").tenant == "other"
    text = path.read_text()
    for secret in ("demo-key", "demo-admin-key", "demo-reader-key", "other-key"):
        assert f'"{secret}"' not in text


# --- the key tool -----------------------------------------------------------------------------


def test_key_tool_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"tenants": TENANTS, "api_keys": {}}))
    assert keytool.main(["create", "--keyring", str(path), "--tenant", "acme", "--subject", "alice",
                         "--roles", "search,ingest", "--expires", "30d"]) == 0  # fmt: skip
    first = capsys.readouterr().out.strip()
    second = keytool.create(path, tenant="acme", subject="alice", roles=["search"], expires="never")
    assert first.startswith("isk_") and first != second
    text = path.read_text()
    for presented in (first, second):
        secret = presented.split("_", 2)[2]
        assert secret not in text and presented not in text  # the file holds no usable secret
    ring = Keyring.load(path, None, 0.5)
    assert auth_key(ring, first).roles == frozenset({"search", "ingest"})
    assert auth_key(ring, second).roles == frozenset({"search"})  # rotation: both valid

    first_id = first.split("_")[1]
    assert keytool.main(["list", "--keyring", str(path)]) == 0
    listing = capsys.readouterr().out
    assert first_id in listing and "active" in listing and first.split("_", 2)[2] not in listing
    assert keytool.main(["revoke", "--keyring", str(path), first_id]) == 0
    ring = Keyring.load(path, None, 0.5)
    with pytest.raises(Unauthenticated, match="revoked"):
        auth_key(ring, first)
    assert auth_key(ring, second).subject == "alice"
    assert json.loads(path.read_text())["tenants"] == TENANTS  # other sections kept
    assert {r["status"] for r in keytool.rows(path)} == {"revoked", "active"}


def test_key_tool_new_file_is_private_and_bad_input_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new.json"
    keytool.create(path, tenant="t1", subject="s", roles=["search"], expires="12h")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keytool.main(["create", "--keyring", str(path), "--tenant", "t1", "--subject", "s",
                         "--roles", "superuser"]) == 2  # fmt: skip
    assert keytool.main(["revoke", "--keyring", str(path), "nosuchid"]) == 2
    assert keytool.main(["create", "--keyring", str(path), "--tenant", "t1", "--subject", "s",
                         "--roles", "search", "--expires", "yesterday"]) == 2  # fmt: skip
    assert "error:" in capsys.readouterr().err


def test_expiry_parsing() -> None:
    assert keytool.parse_expiry("never", NOW) is None
    assert keytool.parse_expiry("2h", 0) == "1970-01-01T02:00:00Z"
    assert keytool.parse_expiry("2999-01-01", NOW) == "2999-01-01T00:00:00Z"
    with pytest.raises(InvalidArgument):
        keytool.parse_expiry("2001-01-01", NOW)


# --- RS256 / ES256 tokens from a JWKS ---------------------------------------------------------

SECRET = b"s" * 32


def claims(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "sub": "svc",
        "tenant": "acme",
        "roles": ["search"],
        "aud": "imagesearch",
        "exp": time.time() + 60,
    }
    base.update(over)
    return base


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    algo = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algo.to_jwk(key.public_key()))  # type: ignore[attr-defined]
    return {**jwk, "kid": kid, "use": "sig"}


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [public_jwk(rsa_key, "rsa-1"), public_jwk(ec_key, "ec-1")]}))
    return path


@pytest.fixture
def verifier(jwks_file: Path) -> Authenticator:
    ring = Keyring({"tenants": TENANTS}, 0.5)
    return Authenticator(ring, TokenVerifier(SECRET, "imagesearch", 30, ring, JwksKeys.load(jwks_file)))


def test_rs256_and_es256_tokens_verify_by_kid(
    verifier: Authenticator, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    for key, alg, kid in ((rsa_key, "RS256", "rsa-1"), (ec_key, "ES256", "ec-1")):
        token = jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid})
        p = verifier.authenticate(f"Bearer {token}")
        assert (p.tenant, p.subject, p.credential, p.safety_threshold) == ("acme", "svc", "token", 0.4)
    # HS256 with the shared secret still works beside them
    assert verifier.authenticate("Bearer " + sign_token(claims(), SECRET)).tenant == "acme"


def test_public_key_tokens_check_claims(verifier: Authenticator, ec_key: ec.EllipticCurvePrivateKey) -> None:
    def tok(**over: object) -> str:
        c = claims(**over)
        c = {k: v for k, v in c.items() if v is not None}
        return "Bearer " + jwt.encode(c, ec_key, algorithm="ES256", headers={"kid": "ec-1"})

    with pytest.raises(Unauthenticated, match="expired"):
        verifier.authenticate(tok(exp=time.time() - 120))
    with pytest.raises(Unauthenticated, match="`exp`"):
        verifier.authenticate(tok(exp=None))
    with pytest.raises(Unauthenticated, match="audience"):
        verifier.authenticate(tok(aud="someone-else"))
    with pytest.raises(Unauthenticated, match="audience"):
        verifier.authenticate(tok(aud=None))
    assert verifier.authenticate(tok(exp=time.time() - 10)).tenant == "acme"  # within the 30 s leeway


def test_wrong_kid_or_key_is_rejected(
    verifier: Authenticator, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(Unauthenticated, match="not recognised"):
        verifier.authenticate(
            "Bearer " + jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "nope"})
        )
    with pytest.raises(Unauthenticated, match="not recognised"):  # no kid
        verifier.authenticate("Bearer " + jwt.encode(claims(), rsa_key, algorithm="RS256"))
    with pytest.raises(Unauthenticated, match="not recognised"):  # RS256 header naming the EC key
        verifier.authenticate(
            "Bearer " + jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
        )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthenticated, match="signature"):
        verifier.authenticate(
            "Bearer " + jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "rsa-1"})
        )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _hs256_with_key(header: dict[str, Any], key: bytes) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims()).encode())}"
    return f"{signing_input}.{_b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("with_secret", [True, False])
def test_hs256_signed_with_the_public_key_is_rejected(
    jwks_file: Path, rsa_key: rsa.RSAPrivateKey, with_secret: bool
) -> None:
    """The classic confusion: an attacker HMACs a token with the (public) RSA key as the secret."""
    ring = Keyring({}, 0.5)
    verifier = TokenVerifier(
        SECRET if with_secret else None, "imagesearch", 30, ring, JwksKeys.load(jwks_file)
    )
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_text = json.dumps(public_jwk(rsa_key, "rsa-1")).encode()
    for key in (pem, jwk_text):
        token = _hs256_with_key({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}, key)
        with pytest.raises(
            Unauthenticated, match="signature" if with_secret else "HS256 tokens are not accepted"
        ):
            verifier.verify(token)


@pytest.mark.parametrize("alg", ["none", "None", "HS512", "RS512", "PS256", "EdDSA", ""])
def test_other_algorithms_are_rejected(verifier: Authenticator, alg: str) -> None:
    token = (
        f"{_b64(json.dumps({'alg': alg, 'kid': 'rsa-1'}).encode())}.{_b64(json.dumps(claims()).encode())}."
    )
    with pytest.raises(Unauthenticated, match="algorithm must be HS256, RS256 or ES256"):
        verifier.authenticate(f"Bearer {token}")


def test_jwks_accepts_only_public_rsa_and_p256_keys(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(InvalidArgument, match="private or symmetric"):
        JwksKeys({"keys": [{"kty": "oct", "k": _b64(b"k" * 32), "kid": "h"}]})
    private = json.loads(jwt.get_algorithm_by_name("ES256").to_jwk(ec_key))  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match="private or symmetric"):
        JwksKeys({"keys": [{**private, "kid": "p"}]})
    with pytest.raises(InvalidArgument, match="RS256"):
        JwksKeys({"keys": [{**public_jwk(rsa_key, "r"), "alg": "RS512"}]})
    p384 = ec.generate_private_key(ec.SECP384R1())
    jwk384 = json.loads(jwt.get_algorithm_by_name("ES384").to_jwk(p384.public_key()))  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument, match="P-256"):
        JwksKeys({"keys": [{**jwk384, "kid": "e"}]})
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(InvalidArgument, match="2048"):
        JwksKeys({"keys": [public_jwk(small, "s")]})
    with pytest.raises(InvalidArgument, match="kid"):
        JwksKeys({"keys": [{k: v for k, v in public_jwk(rsa_key, "x").items() if k != "kid"}]})
    with pytest.raises(InvalidArgument, match="duplicate"):
        JwksKeys({"keys": [public_jwk(rsa_key, "x"), public_jwk(ec_key, "x")]})


def test_jwks_only_gateway_refuses_hs256(jwks_file: Path) -> None:
    ring = Keyring({}, 0.5)
    auth = Authenticator(ring, TokenVerifier(None, "imagesearch", 30, ring, JwksKeys.load(jwks_file)))
    with pytest.raises(Unauthenticated, match="HS256 tokens are not accepted"):
        auth.authenticate("Bearer " + sign_token(claims(), SECRET))
