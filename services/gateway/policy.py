"""Policy: who may do what, which assets a caller may see, and an audit line for every decision.

Visibility is enforced twice (defence in depth):
1. as filters on every first-stage query (tenant = the caller's tenant, licence in the allowed set and
   not expired, safety_score <= the tenant's threshold unless the caller opted in with the role);
2. as a re-check of every returned asset before it leaves the gateway (`admit`), which also applies
   the exact expiry instant (the filter rounds `now` down so the search cache keys stay stable).

Audit lines (structured: who, tenant, action, decision, why, request id), one per decision:
authentication failures, authorisation allow/deny, visibility drops, and a per-request summary of what
the result filter admitted. The gateway queues them for a `JsonLinesWriter` (written and fsync'd in
batches off the request path, flushed on shutdown); without one they go to the logger named "audit".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from services.common import context
from services.common.errors import PermissionDenied
from services.common.jsonlines import JsonLinesWriter
from services.gateway.auth import ROLE_UNSAFE, Principal
from services.gateway.domain import AnyOf, AssetSummary, Condition, Filter, Op, all_of

# What each gateway action requires.
ACTION_ROLES = {
    "search": "search",
    "search_similar": "search",
    "get_asset": "search",
    "get_asset_image": "search",
    "ingest": "ingest",
    "delete_asset": "delete",
    "take_drift_reference": "admin",
    # model versions (AdminService)
    "reindex": "admin",
    "model_versions": "admin",
    "activate_model": "admin",
    "rollback_model": "admin",
    "remove_model": "admin",
    "record_feedback": "search",  # whoever may search may say what they did with the results
}


class AuditLog:
    """Structured audit trail: to `writer` (batched, durable), else to the "audit" logger. `sink`
    replaces both in tests (it receives the fields dict)."""

    def __init__(
        self, sink: Callable[[dict[str, Any]], None] | None = None, writer: JsonLinesWriter | None = None
    ) -> None:
        self._log = structlog.get_logger("audit")
        self._sink = sink
        self._writer = writer

    def record(
        self, principal: Principal | None, action: str, decision: str, why: str, **fields: Any
    ) -> None:
        entry: dict[str, Any] = {
            "logger": "audit",
            "who": principal.subject if principal else "anonymous",
            "tenant": principal.tenant if principal else "",
            "credential": principal.credential if principal else "",
            "action": action,
            "decision": decision,
            "why": why,
            **fields,
        }
        if self._sink is not None:
            self._sink(entry)
            return
        if self._writer is not None:
            entry["level"] = "warning" if decision == "deny" else "info"
            entry["event"] = "policy"
            entry["request_id"] = context.request_id()
            self._writer.append(entry)
            return
        (self._log.warning if decision == "deny" else self._log.info)("policy", **entry)


@dataclass(frozen=True)
class Visibility:
    """What one request may see; built once per request by `Policy.visibility`."""

    tenant: str
    licenses: frozenset[str] | None  # None = every licence
    safety_threshold: float | None  # None = the caller opted in to unsafe content
    now: dt.datetime

    def filter(self, granularity_s: int) -> Filter:
        """The mandatory filter ANDed into every first-stage query (tenant travels as its own field)."""
        epoch = int(self.now.timestamp())
        rounded = dt.datetime.fromtimestamp(epoch - epoch % granularity_s, tz=dt.UTC)
        parts: list[Filter | None] = [
            AnyOf(
                (
                    Condition("license_expires_at", Op.IS_NULL, True),
                    Condition("license_expires_at", Op.GREATER_THAN, rounded),
                )
            )
        ]
        if self.licenses is not None:
            parts.append(Condition("license_name", Op.IN, tuple(sorted(self.licenses))))
        if self.safety_threshold is not None:
            parts.append(Condition("safety_score", Op.LESS_THAN_OR_EQUAL, float(self.safety_threshold)))
        result = all_of(*parts)
        assert result is not None
        return result

    def cache_key(self) -> tuple[Any, ...]:
        """What binds a page token to this visibility (the tenant and the visible set's definition)."""
        return (
            self.tenant,
            sorted(self.licenses) if self.licenses is not None else None,
            self.safety_threshold,
        )


class Policy:
    def __init__(self, audit: AuditLog, license_time_granularity_s: int = 60) -> None:
        self.audit = audit
        self.granularity_s = license_time_granularity_s

    def authorize(self, principal: Principal, action: str, target: str = "") -> None:
        role = ACTION_ROLES[action]
        if not principal.has_role(role):
            self.audit.record(principal, action, "deny", f"missing role {role!r}", target=target)
            raise PermissionDenied(
                f"{action} needs the {role!r} role; credential {principal.subject!r} has "
                f"{sorted(principal.roles) or 'no roles'}"
            )
        self.audit.record(principal, action, "allow", f"role {role!r}", target=target)

    def visibility(
        self,
        principal: Principal,
        action: str,
        *,
        requested_licenses: Sequence[str] = (),
        include_unsafe: bool = False,
        now: dt.datetime | None = None,
    ) -> Visibility:
        now = now or dt.datetime.now(dt.UTC)
        licenses = principal.allowed_licenses
        if requested_licenses:
            requested = frozenset(requested_licenses)
            licenses = requested if licenses is None else licenses & requested
            if not licenses:
                self.audit.record(
                    principal, action, "deny", "no requested licence is allowed", requested=sorted(requested)
                )
                raise PermissionDenied(
                    f"none of the requested licences {sorted(requested)} is allowed for tenant "
                    f"{principal.tenant!r} (allowed: {sorted(principal.allowed_licenses or [])})"
                )
        threshold: float | None = principal.safety_threshold
        if include_unsafe:
            if not principal.has_role(ROLE_UNSAFE):
                self.audit.record(principal, action, "deny", f"include_unsafe needs role {ROLE_UNSAFE!r}")
                raise PermissionDenied(
                    f"include_unsafe needs the {ROLE_UNSAFE!r} role; ask your tenant admin, "
                    "or drop include_unsafe"
                )
            threshold = None
            self.audit.record(principal, action, "allow", "unsafe content opted in", role=ROLE_UNSAFE)
        return Visibility(principal.tenant, licenses, threshold, now)

    def denial(self, vis: Visibility, asset: AssetSummary) -> str | None:
        """Why `asset` must not be shown under `vis`, or None when it may (the fast path)."""
        if asset.tenant != vis.tenant:
            return f"tenant {asset.tenant!r} is not the caller's tenant {vis.tenant!r}"
        if vis.licenses is not None and asset.license_name not in vis.licenses:
            return f"licence {asset.license_name or '(none)'} not allowed"
        expires = asset.license_expires_at
        if expires is not None and expires <= vis.now:
            return f"licence {asset.license_name or '(none)'} expired at {expires.isoformat()}"
        if vis.safety_threshold is not None and asset.safety_score > vis.safety_threshold:
            return f"safety {asset.safety_score:.2f} > threshold {vis.safety_threshold:.2f}"
        return None

    def reasons(self, vis: Visibility, asset: AssetSummary) -> list[str]:
        """Why an admitted asset passed, one reason per rule (for the response's PolicyVerdict)."""
        name = asset.license_name or "(none)"
        allowed = "allowed" if vis.licenses is not None else "allowed (tenant allows any licence)"
        expires = asset.license_expires_at
        until = f"valid until {expires.isoformat()}" if expires is not None else "no expiry"
        if vis.safety_threshold is None:
            safety = f"safety {asset.safety_score:.2f}: caller opted in to unsafe content"
        else:
            safety = f"safety {asset.safety_score:.2f} <= threshold {vis.safety_threshold:.2f}"
        return [f"tenant {vis.tenant}", f"licence {name} {allowed}, {until}", safety]

    def admit(self, vis: Visibility, asset: AssetSummary) -> tuple[bool, list[str]]:
        """Re-check one asset against the request's visibility; returns (admitted, reasons)."""
        why = self.denial(vis, asset)
        if why is not None:
            return False, [why]
        return True, self.reasons(vis, asset)

    def screen(
        self, principal: Principal, action: str, vis: Visibility, assets: Sequence[AssetSummary]
    ) -> list[int]:
        """Indices of the assets `vis` admits; an audit line for each one dropped and a summary."""
        admitted: list[int] = []
        for i, asset in enumerate(assets):
            why = self.denial(vis, asset)
            if why is None:
                admitted.append(i)
            else:
                # The search filters should have excluded it: a drop here is worth a warning.
                self.audit.record(principal, action, "deny", why, asset_id=asset.asset_id, stage="result")
        self.audit.record(
            principal,
            action,
            "allow",
            "results screened",
            admitted=len(admitted),
            dropped=len(assets) - len(admitted),
            licenses=sorted(vis.licenses) if vis.licenses is not None else "*",
            safety_threshold=vis.safety_threshold,
        )
        return admitted
