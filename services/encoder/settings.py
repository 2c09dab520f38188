"""Encoder settings (env prefix IMAGESEARCH_ENCODER_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class EncoderSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGESEARCH_ENCODER_", extra="ignore", validate_default=True)
