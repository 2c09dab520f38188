"""Authentication: a bearer credential (API key or HMAC-signed token) -> a Principal.

Two credential kinds, both sent as `authorization: Bearer <credential>` metadata:

- API keys, from a keyring (file and/or inline JSON). Keys may be stored as `sha256:<hex>` digests so
  the keyring never holds a usable secret; lookups hash the presented key either way, so the
  comparison never runs over the secret itself.
- Signed tokens: compact JWS (JWT) with HS256 only, verified with the standard library
  (`hmac.compare_digest`). Only HS256 is accepted (no `alg: none`, no algorithm switching); `exp` is
  required, `nbf`/`iat` are honoured with a leeway, `aud` must match. Tokens minted by PyJWT
  (`jwt.encode(claims, secret, "HS256")`) verify here; no JWT dependency is needed at run time.
  Claims: `sub`, `tenant`, `roles` (list), `exp`, optional `licenses` (narrows the tenant's set) and
  `safety_threshold` (can only tighten the tenant's).

The tenant's defaults (safety threshold, allowed licences) come from the keyring's `tenants` section.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


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
        self._keys: dict[str, Principal] = {}
        for key, raw in (config.get("api_keys") or {}).items():
            where = f"api key {str(raw.get('subject') or '?')!r}"
            tenant = str(raw.get("tenant", ""))
            if not TENANT_RE.match(tenant):
                raise InvalidArgument(f"keyring: {where} has no valid tenant (1-64 of [A-Za-z0-9_-])")
            roles = frozenset(str(r) for r in raw.get("roles") or ())
            unknown = roles - KNOWN_ROLES
            if unknown:
                raise InvalidArgument(f"keyring: {where} has unknown roles {sorted(unknown)}")
            digest = key.removeprefix("sha256:") if key.startswith("sha256:") else _digest(key)
            self._keys[digest] = self.principal(
                subject=str(raw.get("subject") or f"key-{digest[:8]}"),
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

    def lookup_key(self, key: str) -> Principal | None:
        return self._keys.get(_digest(key))

    def __len__(self) -> int:
        return len(self._keys)


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
# HS256 tokens


def _b64decode(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated("malformed token: bad base64url segment") from None


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_token(claims: Mapping[str, Any], secret: bytes) -> str:
    """Mint an HS256 token (for tests, tooling and the CLI; services only verify)."""
    header = _b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64encode(sig)}"


class TokenVerifier:
    def __init__(self, secret: bytes, audience: str, leeway_s: float, keyring: Keyring) -> None:
        if len(secret) < 32:
            raise InvalidArgument("IMAGESEARCH_GATEWAY_TOKEN_SECRET must be at least 32 bytes")
        self._secret = secret
        self._audience = audience
        self._leeway_s = leeway_s
        self._keyring = keyring

    def verify(self, token: str, now: float | None = None) -> Principal:
        parts = token.split(".")
        if len(parts) != 3:
            raise Unauthenticated("malformed token: expected header.payload.signature")
        header_b, payload_b, sig_b = parts
        try:
            header = json.loads(_b64decode(header_b))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Unauthenticated("malformed token header") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise Unauthenticated("token algorithm must be HS256")
        expected = hmac.new(self._secret, f"{header_b}.{payload_b}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _b64decode(sig_b)):
            raise Unauthenticated("token signature is invalid")
        try:
            claims = json.loads(_b64decode(payload_b))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise Unauthenticated("malformed token payload") from None
        if not isinstance(claims, dict):
            raise Unauthenticated("malformed token payload")
        now = time.time() if now is None else now
        exp = claims.get("exp")
        if not isinstance(exp, int | float):
            raise Unauthenticated("token has no `exp` claim")
        if now > exp + self._leeway_s:
            raise Unauthenticated("token has expired")
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and now + self._leeway_s < nbf:
            raise Unauthenticated("token is not valid yet (nbf)")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else list(aud or [])
        if self._audience not in auds:
            raise Unauthenticated(f"token audience must include {self._audience!r}")
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
        principal = self.keyring.lookup_key(credential)
        if principal is None:
            raise Unauthenticated("unknown API key")
        return principal
