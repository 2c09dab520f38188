"""The size caps of the gateway's backends, enforced again at the gateway: the first hop that sees a
caller's input rejects what a backend would reject, before decoding, encoding or forwarding it (a
100,000-value IN list used to cost the search service ~0.5 s before its own cap said no).

Each number is read from its one definition in the search service (a domain constant, or a settings
default) rather than copied. The settings' defaults are what the gateway enforces: a deployment that
raises one of those search settings gets the default at the gateway (the search service's own
settings are not read from the gateway's environment).
"""

from __future__ import annotations

from services.search.domain import MAX_ASSET_ID_CHARS

# Most values in one IN / CONTAINS_ANY / CONTAINS_ALL list (and licence names in one request).
from services.search.filters import MAX_LIST_VALUES
from services.search.settings import SearchSettings

_SEARCH = SearchSettings.model_fields

# Most nodes (conditions + operators) in the filter sent to the search service: the caller's filter
# plus the policy's own conditions must fit.
MAX_FILTER_NODES: int = _SEARCH["max_filter_nodes"].default
# Largest `limit` of one first-stage query: bounds the rerank candidate window.
MAX_QUERY_LIMIT: int = _SEARCH["max_limit"].default
# Largest offset + limit of a first-stage query (paging with rerank disabled).
MAX_FIRST_STAGE_DEPTH: int = _SEARCH["max_candidate_window"].default

__all__ = [
    "MAX_ASSET_ID_CHARS",
    "MAX_FILTER_NODES",
    "MAX_FIRST_STAGE_DEPTH",
    "MAX_LIST_VALUES",
    "MAX_QUERY_LIMIT",
]
