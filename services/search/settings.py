"""Search settings (env prefix IMAGESEARCH_SEARCH_)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import ServiceSettings


class SearchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGESEARCH_SEARCH_", extra="ignore", validate_default=True)
