"""Authentication: a bearer credential (API key or signed token) -> a Principal.

Two credential kinds, both sent as `authorization: Bearer <credential>` metadata:

- API keys, presented as `isk_<id>_<secret>` (`python -m services.gateway.keys create` mints them). The
  keyring stores, under the public id, only a salted scrypt hash of the secret
  (`scrypt$<log2 n>$<r>$<p>$<salt>$<hash>`), the tenant, subject, roles and a `not_after` expiry; a
  revoked key keeps its entry with `revoked_at`. Lookup is by id, so one scrypt runs per call at most,
  and a verified key is remembered briefly (by a SHA-256 of its secret, in memory only) so the hot path
  is a dictionary lookup. Rotation is two entries for the same subject with overlapping validity.
  Older keyrings still load: an entry keyed by the key itself, or by `sha256:<hex>` of it, matches a
  credential presented without the `isk_` form (the demo keyring's `demo-key` is such an entry).
- Signed tokens (JWS compact form, verified by PyJWT): HS256 with `IMAGESEARCH_GATEWAY_TOKEN_SECRET`,
  RS256 / ES256 with the public keys of a JWKS file (`kid` picks the key). The header's `alg` picks the
  key *kind*, and each key verifies only its own algorithm: an HS256 token is never checked against a
  public key, `alg: none` and every other algorithm are refused. `exp` is required, `nbf`/`iat` are
  honoured with a leeway, `aud` must match. Claims: `sub`, `tenant`, `roles` (list), `exp`, optional
  `licenses` (narrows the tenant's set) and `safety_threshold` (can only tighten the tenant's).

Failure messages say what the caller can fix and nothing else: an unknown id, a wrong secret and a
malformed key all read "invalid API key" (whether an id exists is not revealed); "expired" and
"revoked" are said only to a caller that presented the right secret. No secret is ever logged.

The tenant's defaults (safety threshold, allowed licences) come from the keyring's `tenants` section.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cachetools import TTLCache

from services.common.errors import InvalidArgument, Unauthenticated

ROLE_SEARCH = "search"  # Search, SearchSimilar, GetAsset
ROLE_INGEST = "ingest"  # Ingest
ROLE_DELETE = "delete"  # DeleteAsset
ROLE_UNSAFE = "unsafe-content"  # include_unsafe=true
ROLE_ADMIN = "admin"  # every role
KNOWN_ROLES = frozenset({ROLE_SEARCH, ROLE_INGEST, ROLE_DELETE, ROLE_UNSAFE, ROLE_ADMIN})

TENANT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class TenantPolicy:
    safety_threshold: float
    allowed_licenses: frozenset[str] | None = None  # None = every licence


@dataclass(frozen=True)
class Principal:
    """Who is calling: derived from the credential only, never from the request body."""

    subject: str
    tenant: str
    roles: frozenset[str]
    safety_threshold: float
    allowed_licenses: frozenset[str] | None  # None = every licence
    credential: str  # "api-key" or "token"

    def has_role(self, role: str) -> bool:
        return role in self.roles or ROLE_ADMIN in self.roles


log = logging.getLogger(__name__)

KEY_PREFIX = "isk_"
KEY_ID_RE = re.compile(r"^[a-z0-9]{8,32}$")
INVALID_KEY = "invalid API key"

# scrypt work factor for new keys: 2**14 x 8 = 16 MiB and tens of milliseconds per verification. Secrets
# minted by `keys create` are 256 random bits, which no hash could make guessable; the slow, salted hash
# is defence in depth for the keyring file (hand-chosen secrets, a stolen copy) and its cost is paid once
# per key per VERIFIED_TTL_S thanks to the cache below. Stored hashes carry their own parameters.
SCRYPT_LOG2_N = 14
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_MAX_LOG2_N = 20  # a hostile or mistaken keyring cannot ask for more than 1 GiB per check
_SCRYPT_MAXMEM = (1 << 31) - 1  # OpenSSL's ceiling; parse() keeps 128 * r * n under 1 GiB
VERIFIED_TTL_S = 60.0  # a verified key skips scrypt for this long (the keyring is immutable at run time)
FAILED_TTL_S = 5.0  # the same wrong secret for the same id is refused without another scrypt


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str, *, log2_n: int = SCRYPT_LOG2_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$<log2 n>$<r>$<p>$<salt>$<hash>` with a fresh 16-byte salt (base64url, unpadded)."""
    salt = secrets.token_bytes(16)
    raw = hashlib.scrypt(secret.encode(), salt=salt, n=1 << log2_n, r=r, p=p, dklen=32, maxmem=_SCRYPT_MAXMEM)
    return f"scrypt${log2_n}${r}${p}${_b64e(salt)}${_b64e(raw)}"


@dataclass(frozen=True)
class _ScryptHash:
    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str, where: str) -> _ScryptHash:
        parts = text.split("$")
        try:
            if len(parts) != 6 or parts[0] != "scrypt":
                raise ValueError
            log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt, digest = _b64d(parts[4]), _b64d(parts[5])
        except (ValueError, binascii.Error):
            raise InvalidArgument(
                f"keyring: {where}: `hash` must be scrypt$<log2 n>$<r>$<p>$<salt>$<hash>"
            ) from None
        if not (10 <= log2_n <= _SCRYPT_MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 16) or (
            128 * r << log2_n
        ) > (1 << 30):
            raise InvalidArgument(f"keyring: {where}: scrypt parameters out of range")
        if len(salt) < 16 or len(digest) < 16:
            raise InvalidArgument(f"keyring: {where}: scrypt salt and hash must be at least 16 bytes")
        return cls(log2_n, r, p, salt, digest)

    def matches(self, secret: str) -> bool:
        raw = hashlib.scrypt(
            secret.encode(),
            salt=self.salt,
            n=1 << self.log2_n,
            r=self.r,
            p=self.p,
            dklen=len(self.digest),
            maxmem=_SCRYPT_MAXMEM,
        )
        return hmac.compare_digest(raw, self.digest)


def new_key_id() -> str:
    return secrets.token_hex(8)  # 16 lowercase hex characters


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def present_key(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}{key_id}_{secret}"


def split_key(credential: str) -> tuple[str, str] | None:
    """`isk_<id>_<secret>` -> (id, secret); None for anything else. The secret may contain `_`."""
    if not credential.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = credential[len(KEY_PREFIX) :].partition("_")
    if not sep or not secret or not KEY_ID_RE.match(key_id):
        return None
    return key_id, secret


def parse_time(value: Any, where: str) -> float | None:
    """An RFC 3339 timestamp (or epoch seconds) -> epoch seconds; None stays None."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if t.tzinfo is None:
                t = t.replace(tzinfo=dt.UTC)
            return t.timestamp()
    raise InvalidArgument(f"keyring: {where}: expected an RFC 3339 timestamp, got {value!r}")


@dataclass(frozen=True)
class StoredKey:
    """One `isk_` key as the keyring holds it: never the secret."""

    key_id: str
    secret_hash: _ScryptHash
    principal: Principal
    not_after: float | None  # epoch seconds; None = no expiry
    revoked: bool


def _licenses(value: Any, where: str) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise InvalidArgument(f"{where}: allowed_licenses must be a list of licence names")
    names = frozenset(str(v) for v in value)
    return None if "*" in names else names


def _threshold(value: Any, where: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{where}: safety_threshold must be a number in [0, 1]") from None
    if not 0.0 <= t <= 1.0:
        raise InvalidArgument(f"{where}: safety_threshold {t} is outside [0, 1]")
    return t


class Keyring:
    """API keys and per-tenant policy defaults. Built once at start-up; immutable afterwards."""

    def __init__(self, config: Mapping[str, Any], default_safety_threshold: float) -> None:
        self.default_safety_threshold = default_safety_threshold
        self.tenants: dict[str, TenantPolicy] = {}
        for name, raw in (config.get("tenants") or {}).items():
            if not TENANT_RE.match(name):
                raise InvalidArgument(f"keyring: tenant name {name!r} must be 1-64 of [A-Za-z0-9_-]")
            raw = raw or {}
            self.tenants[name] = TenantPolicy(
                safety_threshold=_threshold(
                    raw.get("safety_threshold", default_safety_threshold), f"tenant {name}"
                ),
                allowed_licenses=_licenses(raw.get("allowed_licenses"), f"tenant {name}"),
            )
        self._legacy: dict[str, Principal] = {}  # sha256(key) -> principal, for keys without `isk_`
        self._keys: dict[str, StoredKey] = {}
        plain = 0
        for key, raw in (config.get("api_keys") or {}).items():
            raw = raw or {}
            if not isinstance(raw, Mapping):
                raise InvalidArgument("keyring: every api_keys entry must be a mapping")
            hashed = raw.get("hash") is not None
            where = f"api key {key!r}" if hashed else f"api key {str(raw.get('subject') or '?')!r}"
            tenant = str(raw.get("tenant", ""))
            if not TENANT_RE.match(tenant):
                raise InvalidArgument(f"keyring: {where} has no valid tenant (1-64 of [A-Za-z0-9_-])")
            roles = frozenset(str(r) for r in raw.get("roles") or ())
            unknown = roles - KNOWN_ROLES
            if unknown:
                raise InvalidArgument(f"keyring: {where} has unknown roles {sorted(unknown)}")
            if hashed:
                if not KEY_ID_RE.match(key):
                    raise InvalidArgument(f"keyring: {where}: a key id is 8-32 of [a-z0-9]")
                subject = str(raw.get("subject") or f"key-{key}")
            else:
                digest = key.removeprefix("sha256:") if key.startswith("sha256:") else _digest(key)
                plain += not key.startswith("sha256:")
                subject = str(raw.get("subject") or f"key-{digest[:8]}")
            principal = self.principal(
                subject=subject,
                tenant=tenant,
                roles=roles,
                licenses=_licenses(raw.get("allowed_licenses"), where),
                safety_threshold=(
                    _threshold(raw["safety_threshold"], where)
                    if raw.get("safety_threshold") is not None
                    else None
                ),
                credential="api-key",
            )
            if hashed:
                self._keys[key] = StoredKey(
                    key_id=key,
                    secret_hash=_ScryptHash.parse(str(raw["hash"]), where),
                    principal=principal,
                    not_after=parse_time(raw.get("not_after"), where),
                    revoked=raw.get("revoked_at") is not None,
                )
            else:
                self._legacy[digest] = principal
        if plain:
            log.warning(
                "keyring: %d API key(s) stored in plain text; mint hashed keys with "
                "`python -m services.gateway.keys create` and retire these",
                plain,
            )
        self._lock = threading.Lock()
        # key id -> (sha256 of the verified secret, its StoredKey); failures by (id, sha256 of the attempt)
        self._verified: TTLCache[str, tuple[bytes, StoredKey]] = TTLCache(4096, VERIFIED_TTL_S)
        self._failed: TTLCache[tuple[str, bytes], bool] = TTLCache(4096, FAILED_TTL_S)

    @classmethod
    def load(cls, path: Path | None, inline_json: str | None, default_safety_threshold: float) -> Keyring:
        config: dict[str, Any] = {"tenants": {}, "api_keys": {}}
        if path is not None:
            text = path.read_text()
            data = _parse_config(text, path)
            for section in ("tenants", "api_keys"):
                config[section].update(data.get(section) or {})
        if inline_json:
            try:
                data = json.loads(inline_json)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"IMAGESEARCH_GATEWAY_API_KEYS_JSON is not valid JSON: {exc}") from None
            for section in ("tenants", "api_keys"):
                config[section].update(data.get(section) or {})
        return cls(config, default_safety_threshold)

    def tenant_policy(self, tenant: str) -> TenantPolicy:
        return self.tenants.get(tenant) or TenantPolicy(self.default_safety_threshold, None)

    def principal(
        self,
        *,
        subject: str,
        tenant: str,
        roles: frozenset[str],
        licenses: frozenset[str] | None,
        safety_threshold: float | None,
        credential: str,
    ) -> Principal:
        """Combine a credential's claims with its tenant's policy: a credential can only narrow it."""
        tp = self.tenant_policy(tenant)
        allowed = tp.allowed_licenses
        if licenses is not None:
            allowed = licenses if allowed is None else allowed & licenses
        threshold = (
            tp.safety_threshold if safety_threshold is None else min(tp.safety_threshold, safety_threshold)
        )
        return Principal(subject, tenant, roles, threshold, allowed, credential)

    def authenticate_key(self, credential: str, now: float | None = None) -> Principal:
        """The principal of an API key, or Unauthenticated with a message that reveals nothing internal."""
        parts = split_key(credential)
        if parts is None:
            principal = self._legacy.get(_digest(credential))
            if principal is None:
                raise Unauthenticated(INVALID_KEY)
            return principal
        key_id, secret = parts
        stored = self._keys.get(key_id)
        if stored is None:
            raise Unauthenticated(INVALID_KEY)  # the same answer as a wrong secret
        fingerprint = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            cached = self._verified.get(key_id)
            failed = (key_id, fingerprint) in self._failed
        if cached is not None and hmac.compare_digest(cached[0], fingerprint):
            ok = True
        elif failed:
            ok = False
        else:
            ok = stored.secret_hash.matches(secret)
            with self._lock:
                if ok:
                    self._verified[key_id] = (fingerprint, stored)
                else:
                    self._failed[(key_id, fingerprint)] = True
        if not ok:
            raise Unauthenticated(INVALID_KEY)
        # Only the key's holder learns why a genuine key no longer works.
        if stored.revoked:
            raise Unauthenticated("the API key has been revoked")
        now = time.time() if now is None else now
        if stored.not_after is not None and now >= stored.not_after:
            raise Unauthenticated("the API key has expired")
        return stored.principal

    def needs_hashing(self, credential: str) -> bool:
        """Would authenticating this key run scrypt (a known id whose secret is in neither memo)?"""
        parts = split_key(credential)
        if parts is None or parts[0] not in self._keys:
            return False
        key_id, secret = parts
        fingerprint = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            cached = self._verified.get(key_id)
            failed = (key_id, fingerprint) in self._failed
        return not failed and (cached is None or not hmac.compare_digest(cached[0], fingerprint))

    def lookup_key(self, key: str) -> Principal | None:
        try:
            return self.authenticate_key(key)
        except Unauthenticated:
            return None

    def __len__(self) -> int:
        return len(self._keys) + len(self._legacy)


def _parse_config(text: str, path: Path) -> dict[str, Any]:
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:  # pragma: no cover - pyyaml is a dev extra
            raise InvalidArgument(f"{path}: YAML keyrings need PyYAML; use JSON") from None
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: the keyring must be a mapping with `tenants` and `api_keys`")
    return data


# ----------------------------------------------------------------------------------------------
# Signed tokens

ALG_HS256 = "HS256"
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")


def sign_token(claims: Mapping[str, Any], secret: bytes) -> str:
    """Mint an HS256 token (for tests, tooling and the CLI; services only verify)."""
    header = _b64e(json.dumps({"alg": ALG_HS256, "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64e(json.dumps(dict(claims), separators=(",", ":")).encode())
    sig = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64e(sig)}"


class JwksKeys:
    """The public keys of a JWKS document, by `kid`, each bound to the one algorithm it may verify.

    Only public RSA (>= 2048 bits, RS256) and EC P-256 (ES256) keys are accepted; a symmetric (`oct`) or
    private key in the file is a configuration error, not something to use.
    """

    def __init__(self, document: Mapping[str, Any], where: str = "JWKS") -> None:
        self._keys: dict[str, tuple[str, Any]] = {}
        entries = document.get("keys")
        if not isinstance(entries, list) or not entries:
            raise InvalidArgument(f'{where}: expected {{"keys": [...]}} with at least one key')
        for jwk in entries:
            if not isinstance(jwk, Mapping):
                raise InvalidArgument(f"{where}: every key must be a JSON object")
            kid = jwk.get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidArgument(f"{where}: every key needs a `kid`")
            if kid in self._keys:
                raise InvalidArgument(f"{where}: duplicate kid {kid!r}")
            if "d" in jwk or jwk.get("kty") == "oct":
                raise InvalidArgument(
                    f"{where}: key {kid!r} is private or symmetric; a JWKS file holds public keys"
                )
            kty, crv = jwk.get("kty"), jwk.get("crv")
            alg = "RS256" if kty == "RSA" else "ES256" if (kty, crv) == ("EC", "P-256") else None
            if alg is None or jwk.get("alg", alg) != alg:
                raise InvalidArgument(
                    f"{where}: key {kid!r} must be RSA (RS256) or EC P-256 (ES256), "
                    f"got {kty}/{jwk.get('alg')}"
                )
            try:
                key = jwt.PyJWK(dict(jwk), algorithm=alg).key
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
                raise InvalidArgument(
                    f"{where}: key {kid!r} is not a valid {alg} public key: {exc}"
                ) from None
            if alg == "RS256" and key.key_size < 2048:
                raise InvalidArgument(f"{where}: RSA key {kid!r} is shorter than 2048 bits")
            self._keys[kid] = (alg, key)

    @classmethod
    def load(cls, path: Path) -> JwksKeys:
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidArgument(f"{path}: cannot read the JWKS file: {exc}") from None
        if not isinstance(document, dict):
            raise InvalidArgument(f"{path}: a JWKS file is a JSON object with `keys`")
        return cls(document, str(path))

    def get(self, kid: Any) -> tuple[str, Any] | None:
        return self._keys.get(kid) if isinstance(kid, str) else None

    def __len__(self) -> int:
        return len(self._keys)


class TokenVerifier:
    """Verifies HS256 tokens with the shared secret and RS256/ES256 tokens with the JWKS's public keys."""

    def __init__(
        self,
        secret: bytes | None,
        audience: str,
        leeway_s: float,
        keyring: Keyring,
        jwks: JwksKeys | None = None,
    ) -> None:
        if secret is not None and len(secret) < 32:
            raise InvalidArgument("IMAGESEARCH_GATEWAY_TOKEN_SECRET must be at least 32 bytes")
        if secret is None and jwks is None:
            raise InvalidArgument("signed tokens need a token secret (HS256) or a JWKS file (RS256/ES256)")
        self._secret = secret
        self._jwks = jwks
        self._audience = audience
        self._leeway_s = leeway_s
        self._keyring = keyring

    def _key_for(self, header: Mapping[str, Any]) -> tuple[str, Any]:
        alg = header.get("alg")
        if alg == ALG_HS256:
            if self._secret is None:
                raise Unauthenticated("HS256 tokens are not accepted here; sign with RS256 or ES256")
            return ALG_HS256, self._secret
        if alg in PUBLIC_KEY_ALGORITHMS:
            if self._jwks is None:
                raise Unauthenticated(f"{alg} tokens are not accepted here; sign with HS256")
            found = self._jwks.get(header.get("kid"))
            # The key decides the algorithm: an ES256 key never checks an RS256 header, and no public key
            # ever checks HS256 (the confusion that turns a public key into an HMAC secret).
            if found is None or found[0] != alg:
                raise Unauthenticated("token signing key is not recognised (check the `kid` header)")
            return found
        raise Unauthenticated("token algorithm must be HS256, RS256 or ES256")

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Unauthenticated("malformed token") from None
        alg, key = self._key_for(header)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._audience,
                leeway=self._leeway_s,
                options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token is not valid yet (nbf/iat)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(f"token audience must include {self._audience!r}") from None
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                raise Unauthenticated(f"token audience must include {self._audience!r}") from None
            raise Unauthenticated(f"token has no `{exc.claim}` claim") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature is invalid") from None
        except jwt.DecodeError:
            raise Unauthenticated("malformed token") from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token") from None
        if not isinstance(claims, dict):
            raise Unauthenticated("malformed token payload")
        tenant = claims.get("tenant")
        if not isinstance(tenant, str) or not TENANT_RE.match(tenant):
            raise Unauthenticated("token has no valid `tenant` claim")
        roles_claim = claims.get("roles") or []
        if not isinstance(roles_claim, list):
            raise Unauthenticated("token `roles` claim must be a list")
        roles = frozenset(str(r) for r in roles_claim) & KNOWN_ROLES
        licenses = claims.get("licenses")
        threshold = claims.get("safety_threshold")
        return self._keyring.principal(
            subject=str(claims.get("sub") or "token"),
            tenant=tenant,
            roles=roles,
            licenses=frozenset(str(x) for x in licenses) if isinstance(licenses, list) else None,
            safety_threshold=float(threshold) if isinstance(threshold, int | float) else None,
            credential="token",
        )


class Authenticator:
    """Resolves the `authorization` metadata value to a Principal (or raises Unauthenticated)."""

    def __init__(self, keyring: Keyring, tokens: TokenVerifier | None) -> None:
        self.keyring = keyring
        self.tokens = tokens

    async def authenticate_async(self, authorization: str | None) -> Principal:
        """`authenticate`, with a key's first scrypt check (tens of milliseconds) on a worker thread so
        it never stalls the event loop; a memoised key or a token is checked inline."""
        credential = (authorization or "").strip().partition(" ")[2].strip()
        if credential and self.keyring.needs_hashing(credential):
            return await asyncio.to_thread(self.authenticate, authorization)
        return self.authenticate(authorization)

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated(
                "missing credentials: send `authorization: Bearer <api key or token>` metadata"
            )
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("the authorization metadata must be `Bearer <api key or token>`")
        if credential.count(".") == 2:
            if self.tokens is None:
                raise Unauthenticated("signed tokens are not enabled on this gateway; use an API key")
            return self.tokens.verify(credential)
        return self.keyring.authenticate_key(credential)
