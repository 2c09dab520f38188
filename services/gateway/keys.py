"""API key management for a gateway keyring file: `python -m services.gateway.keys create|list|revoke`.

    python -m services.gateway.keys create --keyring keys.json --tenant acme --subject alice \\
        --roles search,ingest [--expires 90d|12h|2026-12-31|never]
    python -m services.gateway.keys list --keyring keys.json
    python -m services.gateway.keys revoke --keyring keys.json KEY_ID

`create` prints the presented key (`isk_<id>_<secret>`) once, on stdout, and writes only its salted
scrypt hash; the secret cannot be recovered from the file. `revoke` keeps the entry with `revoked_at`
(the audit trail keeps its id). Rotation: create a second key for the same subject, move the callers,
then revoke the first. The gateway reads the keyring at start-up: restart it to apply a change.
The file is rewritten atomically, with mode 0600 when created; other sections (`tenants`, older
entries) are kept as they are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.common.errors import InvalidArgument
from services.gateway.auth import (
    KNOWN_ROLES,
    TENANT_RE,
    Keyring,
    hash_secret,
    new_key_id,
    new_secret,
    parse_time,
    present_key,
)

DEFAULT_EXPIRY = "90d"
_DURATION_RE = re.compile(r"^(\d+)([dhm])$")


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_expiry(text: str, now: float) -> str | None:
    """`90d`, `12h`, `30m`, an ISO date/time (UTC unless it says otherwise) or `never` -> RFC 3339 or None."""
    if text == "never":
        return None
    m = _DURATION_RE.match(text)
    if m:
        seconds = int(m.group(1)) * {"d": 86400, "h": 3600, "m": 60}[m.group(2)]
        if seconds <= 0:
            raise InvalidArgument("--expires must be in the future")
        return _iso(now + seconds)
    try:
        when = parse_time(text, "--expires")
    except InvalidArgument:
        raise InvalidArgument(
            f"--expires: expected 90d, 12h, 30m, an ISO date or `never`, got {text!r}"
        ) from None
    assert when is not None
    if when <= now:
        raise InvalidArgument("--expires must be in the future")
    return _iso(when)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"tenants": {}, "api_keys": {}}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: the keyring must be a JSON object")
    data.setdefault("api_keys", {})
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    """Validate (the gateway must be able to load it), then replace the file atomically."""
    Keyring(data, default_safety_threshold=0.5)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def create(
    path: Path, *, tenant: str, subject: str, roles: Sequence[str], expires: str, now: float | None = None
) -> str:
    """Add a key; return the presented key (the only time it exists outside the caller's hands)."""
    now = time.time() if now is None else now
    if not TENANT_RE.match(tenant):
        raise InvalidArgument("--tenant must be 1-64 of [A-Za-z0-9_-]")
    if not subject.strip():
        raise InvalidArgument("--subject must not be empty")
    unknown = set(roles) - KNOWN_ROLES
    if unknown or not roles:
        raise InvalidArgument(f"--roles: a comma-separated subset of {sorted(KNOWN_ROLES)}")
    data = _read(path)
    key_id = new_key_id()
    while key_id in data["api_keys"]:  # pragma: no cover - 64 random bits
        key_id = new_key_id()
    secret = new_secret()
    entry: dict[str, Any] = {
        "hash": hash_secret(secret),
        "tenant": tenant,
        "subject": subject,
        "roles": sorted(set(roles)),
        "created_at": _iso(now),
        "not_after": parse_expiry(expires, now),
    }
    data["api_keys"][key_id] = entry
    _write(path, data)
    return present_key(key_id, secret)


def rows(path: Path, now: float | None = None) -> list[dict[str, Any]]:
    """One row per key (hashes and legacy key names left out)."""
    now = time.time() if now is None else now
    out = []
    for key_id, raw in _read(path)["api_keys"].items():
        raw = raw or {}
        if raw.get("hash") is None:
            out.append(
                {
                    "id": "(legacy)",
                    "tenant": raw.get("tenant"),
                    "subject": raw.get("subject"),
                    "roles": raw.get("roles"),
                    "not_after": None,
                    "status": "legacy",
                }
            )
            continue
        not_after = parse_time(raw.get("not_after"), key_id)
        status = (
            "revoked"
            if raw.get("revoked_at") is not None
            else "expired"
            if not_after is not None and now >= not_after
            else "active"
        )
        out.append(
            {
                "id": key_id,
                "tenant": raw.get("tenant"),
                "subject": raw.get("subject"),
                "roles": raw.get("roles"),
                "not_after": raw.get("not_after"),
                "status": status,
            }
        )
    return out


def revoke(path: Path, key_id: str, now: float | None = None) -> None:
    now = time.time() if now is None else now
    data = _read(path)
    entry = data["api_keys"].get(key_id)
    if not isinstance(entry, dict) or entry.get("hash") is None:
        raise InvalidArgument(f"no hashed key with id {key_id!r} in {path}")
    entry.setdefault("revoked_at", _iso(now))
    _write(path, data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.gateway.keys", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("create", "list", "revoke"):
        p = sub.add_parser(name)
        p.add_argument("--keyring", type=Path, required=True, help="keyring JSON file (created if absent)")
        if name == "create":
            p.add_argument("--tenant", required=True)
            p.add_argument("--subject", required=True)
            p.add_argument("--roles", required=True, help="comma-separated, e.g. search,ingest")
            p.add_argument("--expires", default=DEFAULT_EXPIRY, help="90d, 12h, an ISO date, or never")
        if name == "revoke":
            p.add_argument("key_id")
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            roles = [r.strip() for r in args.roles.split(",") if r.strip()]
            key = create(
                args.keyring, tenant=args.tenant, subject=args.subject, roles=roles, expires=args.expires
            )
            print(key)
            print("the key above is shown once; the keyring holds only its hash", file=sys.stderr)
        elif args.command == "list":
            for row in rows(args.keyring):
                role_list = ",".join(row["roles"] or [])
                print(
                    f"{row['id']}\t{row['status']}\t{row['tenant']}\t{row['subject']}\t{role_list}\t"
                    f"{row['not_after'] or 'never'}"
                )
        else:
            revoke(args.keyring, args.key_id)
            print(f"revoked {args.key_id}; restart the gateway to apply", file=sys.stderr)
    except (InvalidArgument, OSError, json.JSONDecodeError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
