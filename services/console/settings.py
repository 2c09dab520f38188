"""Console settings (env prefix IMAGESEARCH_CONSOLE_): the only place their defaults are written."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    """The console is an HTTP server, not a gRPC service: it shares none of ServiceSettings' ports."""

    model_config = SettingsConfigDict(
        env_prefix="IMAGESEARCH_CONSOLE_", extra="ignore", validate_default=True
    )

    listen_address: str = Field("127.0.0.1:8080", description="host:port the console's HTTP server binds to.")
    gateway_address: str = Field(
        "127.0.0.1:50070", description="The gateway's public gRPC address (host:port)."
    )
    gateway_tls_ca_file: Path | None = Field(
        None,
        description="PEM CA that signed the gateway's public certificate; set: call the gateway over TLS "
        "(IMAGESEARCH_GATEWAY_PUBLIC_TLS_*), unset: plaintext (loopback).",
    )
    gateway_tls_server_name: str = Field(
        "", description="Name expected in the gateway's certificate when it differs from the address's host."
    )
    gateway_deadline_s: float = Field(
        10.0, gt=0, description="Deadline of one gateway call (ingest: per item)."
    )
    session_secret: SecretStr | None = Field(
        None,
        description="Key that signs the session cookie; unset: a random key per process (sessions end "
        "when the console restarts).",
    )
    session_ttl_s: int = Field(8 * 3600, gt=0, description="Idle lifetime of a login session.")
    max_sessions: int = Field(10_000, ge=1, description="Sessions kept in memory (least recently used go).")
    cookie_secure: bool = Field(
        False, description="Mark the session cookie Secure (set when the console is served over HTTPS)."
    )
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest accepted image upload (search or ingest), per file."
    )
    max_ingest_files: int = Field(100, ge=1, description="Most files one ingest form post may carry.")
    default_page_size: int = Field(24, ge=1, le=100, description="Results per page when the form sets none.")
    default_license: str = Field(
        "CC0-1.0", description="Licence offered by default on the ingest page (policy requires one)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log threshold.")
    log_format: Literal["json", "console"] = Field("json", description="json (machines) or console (humans).")
