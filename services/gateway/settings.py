"""Gateway settings (env prefix IMAGESEARCH_GATEWAY_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGESEARCH_GATEWAY_", extra="ignore", validate_default=True)
