"""The contract's caps the gateway enforces at its own boundary (services/common/limits.py).

The first hop that sees a caller's input rejects what a backend would reject, before decoding,
encoding or forwarding it (a 100,000-value IN list used to cost the search service ~0.5 s before its
own cap said no). The search service's settings may lower or raise some of these for its other
callers; the gateway enforces the contract's defaults.
"""

from __future__ import annotations

from services.common.limits import (
    MAX_ASSET_ID_CHARS,
    MAX_FILTER_NODES,
    MAX_FILTER_VALUES,
    MAX_LIST_VALUES,
    MAX_QUERY_DEPTH,
    MAX_QUERY_LIMIT,
)

# Largest offset + limit of a first-stage query (paging with rerank disabled).
MAX_FIRST_STAGE_DEPTH = MAX_QUERY_DEPTH

__all__ = [
    "MAX_ASSET_ID_CHARS",
    "MAX_FILTER_NODES",
    "MAX_FILTER_VALUES",
    "MAX_FIRST_STAGE_DEPTH",
    "MAX_LIST_VALUES",
    "MAX_QUERY_LIMIT",
]
