"""Typed, validated settings read from environment variables, one prefix per service.

Each service subclasses `ServiceSettings` and sets its own prefix, e.g. `IMAGESEARCH_ENCODER_PORT`.
`describe_settings()` renders the reference table in the README, so docs cannot drift from code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Settings every gRPC service has. Subclasses add their own and set `env_prefix`."""

    model_config = SettingsConfigDict(env_prefix="IMAGESEARCH_", extra="ignore", validate_default=True)

    host: str = Field("127.0.0.1", description="Address the gRPC server binds to (0.0.0.0 in containers).")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 picks a free port (logged at start).")
    metrics_host: str = Field("127.0.0.1", description="Address of the Prometheus /metrics HTTP server.")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Prometheus port; unset disables metrics, 0 picks a free port."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log threshold.")
    log_format: Literal["json", "console"] = Field("json", description="json (machines) or console (humans).")
    max_message_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted or sent, in bytes."
    )
    shutdown_grace_s: float = Field(
        10.0, ge=0, description="On SIGTERM, how long in-flight calls may finish before being cancelled."
    )
    health_interval_s: float = Field(2.0, gt=0, description="How often backend readiness is re-checked.")
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Extra plaintext port (on `host`) serving only grpc.health.v1, for probes that cannot "
        "present a suite certificate (Kubernetes gRPC probes); unset: none, 0 picks a free port.",
    )
    default_deadline_s: float = Field(
        30.0, gt=0, description="Deadline applied to backend calls when the caller set none."
    )
    use_uvloop: bool = Field(True, description="Run the event loop on uvloop (faster) when installed.")
    tls_dir: Path | None = Field(
        None,
        description="Suite certificate directory (`python -m services.common.certs init`). Set: internal "
        "services serve only mutual TLS and the gateway calls them over it; unset: plaintext internal hops.",
    )
    tls_identity: str = Field(
        "", description="Identity whose <tls_dir>/<identity>.crt/.key this service presents; empty: its name."
    )
    allowed_callers: dict[str, list[str]] = Field(
        default_factory=lambda: dict(DEFAULT_ALLOWED_CALLERS),
        description='With TLS: which caller identities may call what, as {"package.Service/Method" or '
        '"package.Service/*": [identities]}; "*" is any suite identity; an unlisted method is denied.',
    )


# Only the gateway acts for tenants: it alone may read, write or encode. Health and reflection reveal
# nothing a tenant owns, so any holder of a suite certificate (an operator, a probe) may use them.
DEFAULT_ALLOWED_CALLERS: dict[str, list[str]] = {
    "imagesearch.v1.SearchService/*": ["gateway"],
    "imagesearch.v1.EncoderService/*": ["gateway"],
    "grpc.health.v1.Health/*": ["*"],
    "grpc.reflection.v1alpha.ServerReflection/*": ["*"],
}


class PublicTlsSettings(BaseModel):
    """TLS on a port that faces clients (the gateway's). Off by default so existing clients and ghz
    keep working over plaintext on loopback; clients need no certificate of their own either way."""

    public_tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain of the public port; set together with the key: serve TLS."
    )
    public_tls_key_file: Path | None = Field(None, description="PEM private key of the public port.")


def describe_settings(cls: type[BaseSettings]) -> list[tuple[str, str, str]]:
    """(ENV_NAME, default, description) for every field of a settings class, in declaration order."""
    prefix = cls.model_config.get("env_prefix", "")
    rows = []
    for name, field in cls.model_fields.items():
        default = field.get_default(call_default_factory=True)
        # Complex defaults as JSON: that is how pydantic-settings reads them from the environment.
        shown = (
            ""
            if default is None
            else json.dumps(default)
            if isinstance(default, dict | list)
            else str(default)
        )
        rows.append((f"{prefix}{name}".upper(), shown, field.description or ""))
    return rows
