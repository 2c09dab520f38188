"""Caps of the public contract, written once for every hop that enforces them.

The first hop that sees a caller's input rejects what a later hop would reject (the gateway checks a
filter's lists before forwarding them; the search service checks them again for its other callers), so
both read these numbers from here. Caps that a deployment may tune are settings of the service that
owns them, with these values as their defaults.
"""

from __future__ import annotations

# Longest asset id.
MAX_ASSET_ID_CHARS = 256
# Values in one list operand (IN, CONTAINS_ANY, CONTAINS_ALL), and in all of one filter's lists.
MAX_LIST_VALUES = 1024
MAX_FILTER_VALUES = 8 * MAX_LIST_VALUES
# Nodes (conditions + operators) in one filter (default of IMAGESEARCH_SEARCH_MAX_FILTER_NODES).
MAX_FILTER_NODES = 256
# Largest `limit` of one query (default of IMAGESEARCH_SEARCH_MAX_LIMIT).
MAX_QUERY_LIMIT = 1000
# Largest offset + limit of a query (default of IMAGESEARCH_SEARCH_MAX_CANDIDATE_WINDOW; Weaviate's
# QUERY_MAXIMUM_RESULTS).
MAX_QUERY_DEPTH = 10_000
