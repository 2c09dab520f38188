"""Query planning: a query's inputs validated and every default filled in (QueryRequest in
search.proto), and the canonical cache key of the resulting plan."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.search.domain import (
    DEFAULT_KEYWORD_FIELDS,
    KEYWORD_FIELDS,
    PRIMARY_VECTOR,
    CollectionInfo,
    Fusion,
    ModelRef,
    QueryPlan,
    validate_vector,
)
from services.search.filters import FilterNode, canonical, count_nodes
from services.search.settings import SearchSettings

MIN_WINDOW = 100  # Weaviate's hybrid legs fetch at least 100 candidates


async def plan_query(
    settings: SearchSettings,
    collection_info: Callable[[bool], Awaitable[CollectionInfo]],
    *,
    text: str,
    vector: np.ndarray | None,
    vector_model: ModelRef | None,
    vector_name: str = "",
    alpha: float | None,
    fusion: Fusion | None,
    filter: FilterNode | None,
    limit: int,
    offset: int,
    window: int,
    keyword_fields: list[tuple[str, float]],
    include_vectors: bool,
) -> QueryPlan:
    """Validate a query and fill in every default (see QueryRequest in search.proto)."""
    s = settings
    if len(text) > s.max_query_chars:
        raise InvalidArgument(f"text has {len(text)} characters; at most {s.max_query_chars}")
    has_text = bool(text.strip())
    if vector is not None:
        if vector_model is None or not vector_model.name or not vector_model.version:
            raise InvalidArgument("vector.model needs a name and a version")
        vector = validate_vector(vector, "vector")
        vector_name = vector_name or PRIMARY_VECTOR
        info = await collection_info(False)
        if info.model is None or not info.dimension_of(vector_name):
            # Another replica may have recorded the model or this vector name since this one looked.
            info = await collection_info(True)
        if info.model is None:
            raise NotFound("no asset has been stored yet, so there is nothing to search")
        dimension = info.dimension_of(vector_name)
        if not dimension:
            known = ", ".join(s.name for s in info.specs())
            raise InvalidArgument(
                f"vector.vector_name {vector_name[:40]!r} is not stored in this collection; "
                f"stored vectors: {known}"
            )
        if len(vector) != dimension:
            raise InvalidArgument(
                f"vector has dimension {len(vector)}; the collection's {vector_name!r} vector has {dimension}"
            )
        if vector_model != info.model:
            raise FailedPrecondition(
                f"vector comes from model {vector_model}; the collection holds {info.model} "
                "(embed the query with that model)"
            )
    if not has_text and vector is None:
        raise InvalidArgument("a query needs `text`, `vector`, or both")
    if fusion is None:
        fusion = Fusion(s.hybrid_fusion)
    if alpha is None:
        alpha = s.hybrid_alpha if (has_text and vector is not None) else (1.0 if vector is not None else 0.0)
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise InvalidArgument(f"alpha must be in [0, 1], got {alpha}")
    if alpha < 1.0 and alpha > 0.0 and vector is None:
        raise InvalidArgument(f"alpha {alpha} weights a vector leg but no `vector` was given")
    if alpha == 1.0 and vector is None:
        raise InvalidArgument("alpha = 1 runs only the vector leg: give a `vector` (or lower alpha)")
    if alpha == 0.0 and not has_text:
        raise InvalidArgument("alpha = 0 runs only the keyword leg: give `text` (or raise alpha)")
    if limit < 0 or limit > s.max_limit:
        raise InvalidArgument(f"limit must be in [1, {s.max_limit}], got {limit}")
    limit = limit or s.default_limit
    if offset < 0 or offset > s.max_offset:
        raise InvalidArgument(f"offset must be in [0, {s.max_offset}], got {offset}")
    if offset + limit > s.max_candidate_window:
        # No backend reaches deeper than max_candidate_window results (Weaviate's QUERY_MAXIMUM_RESULTS
        # bounds offset + limit of every query), so neither does the contract (search.proto, offset).
        raise InvalidArgument(
            f"offset + limit must be at most {s.max_candidate_window} (no query reaches deeper than "
            f"result {s.max_candidate_window}), got {offset} + {limit} = {offset + limit}; "
            "narrow the query (e.g. with a filter) to reach later results"
        )
    if window < 0 or window > s.max_candidate_window:
        raise InvalidArgument(f"candidate_window must be in [0, {s.max_candidate_window}], got {window}")
    window = max(window, MIN_WINDOW, offset + limit)
    fields = keyword_fields_or_default(keyword_fields)
    if filter is not None and count_nodes(filter) > s.max_filter_nodes:
        raise InvalidArgument(f"the filter has more than {s.max_filter_nodes} nodes")
    return QueryPlan(
        text=text,
        vector=vector,
        alpha=float(alpha),
        fusion=fusion,
        filter=filter,
        limit=limit,
        offset=offset,
        window=window,
        keyword_fields=fields,
        include_vectors=include_vectors,
        vector_name=vector_name or PRIMARY_VECTOR,
        strength_exponent=s.adaptive_strength_exponent,
    )


def keyword_fields_or_default(given: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
    if not given:
        return DEFAULT_KEYWORD_FIELDS
    out: dict[str, float] = {}
    for name, boost in given:
        if name not in KEYWORD_FIELDS:
            raise InvalidArgument(
                f"unknown keyword field '{name}'; searchable fields: {', '.join(KEYWORD_FIELDS)}"
            )
        if name in out:
            raise InvalidArgument(f"keyword field '{name}' is given twice")
        boost = 1.0 if boost == 0 else float(boost)
        if not math.isfinite(boost) or boost < 0:
            raise InvalidArgument(f"keyword field '{name}': boost must be a positive number, got {boost}")
        out[name] = boost
    return tuple(out.items())


def plan_digest(tenant: str, plan: QueryPlan) -> str:
    """Canonical cache key of every query input (filters normalised, vector hashed)."""
    vec = None
    if plan.vector is not None:
        vec = hashlib.sha256(plan.vector.astype("<f4").tobytes()).hexdigest()
    key: dict[str, Any] = {
        "tenant": tenant,
        "text": plan.text,
        "vector": vec,
        "vector_name": plan.vector_name,
        "alpha": repr(plan.alpha),
        "fusion": plan.fusion.value,
        "exponent": repr(plan.strength_exponent) if plan.fusion is Fusion.ADAPTIVE else "",
        "filter": canonical(plan.filter),
        "limit": plan.limit,
        "offset": plan.offset,
        "window": plan.window,
        "fields": sorted([n, repr(b)] for n, b in plan.keyword_fields),
        "vectors": plan.include_vectors,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
