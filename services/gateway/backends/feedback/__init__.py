"""Durable feedback stores (`base.FeedbackStore`): SQLite in WAL mode (the embedded default, one file
under the gateway's data dir) and Redis (the real stack; Lua scripts keep insert + counters atomic).
`make_feedback_store(settings)` is the one place that picks one.
"""

from __future__ import annotations

from services.gateway.backends.feedback.base import FeedbackStore, PutResult
from services.gateway.settings import GatewaySettings

__all__ = ["FeedbackStore", "PutResult", "make_feedback_store"]


def make_feedback_store(settings: GatewaySettings) -> FeedbackStore:
    if settings.feedback_backend == "redis":
        from services.gateway.backends.feedback.redis import RedisFeedbackStore

        return RedisFeedbackStore(
            settings.feedback_redis_url,
            settings.feedback_key_prefix,
            settings.feedback_redis_timeout_s,
            recent_clicks_kept=settings.preference_recent_clicks,
        )
    from services.gateway.backends.feedback.sqlite import SqliteFeedbackStore

    return SqliteFeedbackStore(
        settings.data_dir / "feedback.sqlite3", recent_clicks_kept=settings.preference_recent_clicks
    )
