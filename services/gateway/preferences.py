"""The optional per-caller preference boost: the assets a caller clicked recently, for the rerank.

Off unless `preference_boost_weight` > 0 (measured before it was offered: docs/RELEVANCE.md). The
feedback store keeps each caller's most recent clicks (bounded: `preference_recent_clicks`); this
module reads them once per caller per `preference_cache_ttl_s` (a search must not pay a store
round trip each time), and a click the caller records through this gateway drops its cached set so
the next search sees it. The rerank adds the weight to each clicked asset it finds in its window
(rerank.boosts) and says so in the result's rerank notes. The set is the caller's own: another
caller of the same tenant is ranked without it, and its pages are cached apart (`personal_key`).
"""

from __future__ import annotations

import hashlib

import structlog
from cachetools import TTLCache

from services.common.errors import DomainError
from services.gateway.auth import Principal
from services.gateway.backends.feedback import FeedbackStore
from services.gateway.settings import GatewaySettings

log = structlog.get_logger("gateway.preferences")

NO_PREFERENCES: frozenset[str] = frozenset()


class CallerPreferences:
    def __init__(self, store: FeedbackStore, weight: float, ttl_s: float, entries: int) -> None:
        self.store = store
        self.weight = weight
        self._sets: TTLCache[tuple[str, str], frozenset[str]] = TTLCache(entries, max(ttl_s, 1e-3))

    @classmethod
    def from_settings(cls, store: FeedbackStore | None, s: GatewaySettings) -> CallerPreferences | None:
        """None when the boost is off (weight 0) or there is no feedback store to learn from."""
        if store is None or s.preference_boost_weight <= 0:
            return None
        return cls(store, s.preference_boost_weight, s.preference_cache_ttl_s, s.preference_cache_entries)

    async def clicked(self, principal: Principal) -> frozenset[str]:
        """The asset ids the caller clicked recently (cached). A failing store boosts nothing: the
        search is still answered, unpersonalised."""
        key = (principal.tenant, principal.subject)
        found = self._sets.get(key)
        if found is not None:
            return found
        try:
            found = frozenset(await self.store.recent_clicks(principal.tenant, principal.subject))
        except DomainError as exc:
            log.warning("recent clicks unavailable; search not personalised", detail=exc.message)
            return NO_PREFERENCES
        self._sets[key] = found
        return found

    def forget(self, principal: Principal) -> None:
        """The caller recorded feedback: read its clicks afresh on its next search."""
        self._sets.pop((principal.tenant, principal.subject), None)


def personal_key(preferred: frozenset[str]) -> str:
    """What a personalised page adds to its page-cache key ("" when nothing is boosted: the page is
    everyone's)."""
    if not preferred:
        return ""
    return hashlib.sha256("\n".join(sorted(preferred)).encode()).hexdigest()
