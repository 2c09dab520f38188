"""Queries on the Weaviate collection: domain filters compiled to Weaviate filters, Weaviate's hybrid
query for relative-score and ranked fusion (each hit's per-leg scores read from the explanation), and
for adaptive fusion or a single leg, the legs run separately and fused in the service."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery
from weaviate.collections.classes.filters import _Filters

from services.search.backends.weaviate.schema import properties_to_doc, weaviate_vector
from services.search.domain import Fusion, Hit, QueryPlan, Scores
from services.search.filters import AllOf, AnyOf, Condition, FieldType, FilterNode, Not, Op
from services.search.fusion import content_terms, coverage, fuse

# The backend's guarded call: runs one Weaviate call under the caller's deadline, mapping failures.
Call = Callable[[Callable[[], Awaitable[Any]], str], Awaitable[Any]]
# Filter field -> Weaviate property (fields not listed keep their name).
FILTER_PROPERTY = {"caption": "caption_exact", "tags": "tags_exact", "safety_labels": "safety_label_names"}


def compile_filter(node: FilterNode) -> _Filters:
    """Domain filter -> Weaviate filter (same semantics as the embedded backend's masks)."""
    if isinstance(node, AllOf):
        return Filter.all_of([compile_filter(c) for c in node.children])
    if isinstance(node, AnyOf):
        return Filter.any_of([compile_filter(c) for c in node.children])
    if isinstance(node, Not):
        return Filter.not_(compile_filter(node.child))
    return _compile_condition(node)


def _compile_condition(c: Condition) -> _Filters:
    prop = Filter.by_property(FILTER_PROPERTY.get(c.field, c.field))
    values: list[Any] = list(c.values)
    if c.type is FieldType.INT:
        values = [int(v) for v in values]
    elif c.type is FieldType.FLOAT:
        values = [float(v) for v in values]
    v0 = values[0]
    match c.op:
        case Op.IS_NULL:
            return prop.is_none(bool(v0))
        case Op.EQUAL if c.type is FieldType.STRING_ARRAY:
            return prop.contains_any([v0])
        case Op.EQUAL:
            return prop.equal(v0)
        case Op.NOT_EQUAL:
            # The complement of EQUAL (so assets without a value match, as in the embedded backend).
            return Filter.not_(prop.equal(v0))
        case Op.IN | Op.CONTAINS_ANY:
            return prop.contains_any(values)
        case Op.CONTAINS_ALL:
            return prop.contains_all(values)
        case Op.LIKE:
            return prop.like(str(v0))
        case Op.GREATER_THAN:
            return prop.greater_than(v0)
        case Op.GREATER_THAN_OR_EQUAL:
            return prop.greater_or_equal(v0)
        case Op.LESS_THAN:
            return prop.less_than(v0)
        case Op.LESS_THAN_OR_EQUAL:
            return prop.less_or_equal(v0)
    raise AssertionError(c.op)


_EXPLAIN_RELATIVE = re.compile(
    r"Result Set (keyword|vector),[^)]*\) Document [0-9a-f-]+: original score (-?[0-9.eE+-]+), "
    r"normalized score: (-?[0-9.eE+-]+)"
)
_EXPLAIN_RANKED = re.compile(
    r"Result Set (keyword|vector),[^)]*\) Document [0-9a-f-]+ contributed (-?[0-9.eE+-]+)"
)


def parse_explain(explain: str | None) -> dict[str, tuple[float | None, float]]:
    """{leg: (raw score or None, weighted contribution)} from Weaviate's hybrid explainScore."""
    out: dict[str, tuple[float | None, float]] = {}
    if not explain:
        return out
    for leg, raw, part in _EXPLAIN_RELATIVE.findall(explain):
        out[leg] = (float(raw), float(part))
    for leg, part in _EXPLAIN_RANKED.findall(explain):
        out[leg] = (None, float(part))
    return out


async def run_query(call: Call, col: Any, plan: QueryPlan) -> list[Hit]:
    """A hybrid (or one-leg) query on one tenant's collection; the fused hits [offset, offset + limit)."""
    filters = compile_filter(plan.filter) if plan.filter is not None else None
    props = [f"{name}^{boost:g}" for name, boost in plan.keyword_fields]
    want_vectors = plan.include_vectors or plan.vector is not None
    target = weaviate_vector(plan.vector_name)
    include_vector: list[str] | bool = [target] if want_vectors else False
    # Each hybrid leg fetches max(100, limit) candidates (checked on v1.39: limit 10 and limit 100 give
    # the same top 10, limit 300 does not). Asking for offset + limit results from offset 0 therefore
    # makes each leg contribute the default window; a larger window is requested explicitly (and
    # those results transferred). The page is cut here.
    hybrid_limit = plan.offset + plan.limit
    if plan.window > max(100, hybrid_limit):
        hybrid_limit = plan.window
    if plan.uses_keyword and plan.uses_vector and plan.fusion is not Fusion.ADAPTIVE:
        # Weaviate's own hybrid (relative-score or ranked fusion).
        assert plan.vector is not None
        vector = plan.vector.astype(np.float32).tolist()
        # Ids, fused scores and the explanation only; the page's objects are fetched by id after.
        # Decoding every result's properties and vector in the client was the larger part of a
        # hybrid call (docs/SEARCH.md, "Design figures": Weaviate hybrid, ids first).
        res = await call(
            lambda: col.query.hybrid(
                query=plan.text,
                vector=vector,
                target_vector=target,
                alpha=plan.alpha,
                fusion_type=HybridFusion.RANKED
                if plan.fusion is Fusion.RANKED
                else HybridFusion.RELATIVE_SCORE,
                query_properties=props,
                filters=filters,
                limit=hybrid_limit,
                return_properties=[],
                include_vector=False,
                return_metadata=MetadataQuery(score=True, explain_score=True),
            ),
            "hybrid query",
        )
        ranked = res.objects[plan.offset : plan.offset + plan.limit]
        by_id = await _fetch_by_id(call, col, [o.uuid for o in ranked], include_vector)
        # An object deleted between the query and the page fetch is left out.
        return [_hybrid_hit(o, by_id[o.uuid], plan) for o in ranked if o.uuid in by_id]
    return await _fused_in_service(call, col, plan, filters, props, target, include_vector)


async def _fused_in_service(
    call: Call,
    col: Any,
    plan: QueryPlan,
    filters: _Filters | None,
    props: list[str],
    target: str,
    include_vector: list[str] | bool,
) -> list[Hit]:
    """Adaptive fusion (both legs), or one leg alone: each leg runs as its own query and the legs are
    fused here with services.search.fusion, exactly as the embedded backend fuses them.

    The fusion needs every candidate's score but only the page's objects: when the window is much
    larger than the page, the legs return ids and scores only and the page is fetched by id (the
    client's property decoding dominates a wide leg: docs/SEARCH.md, "Design figures"). The keyword
    leg of adaptive fusion also returns its keyword fields: each candidate's coverage of the query.
    """
    page_only = (plan.uses_keyword and plan.uses_vector) or 2 * (plan.offset + plan.limit) < plan.window
    leg_properties: list[str] | None = [] if page_only else None
    leg_vector: list[str] | bool = False if page_only else include_vector
    adaptive = plan.fusion is Fusion.ADAPTIVE
    kw_properties = [name for name, _ in plan.keyword_fields] if adaptive and page_only else leg_properties

    async def vector_leg() -> list[Any]:
        if not plan.uses_vector:
            return []
        assert plan.vector is not None
        query_vector = plan.vector.astype(np.float32).tolist()
        res = await call(
            lambda: col.query.near_vector(
                near_vector=query_vector,
                target_vector=target,
                filters=filters,
                limit=plan.window,
                return_properties=leg_properties,
                include_vector=leg_vector,
                return_metadata=MetadataQuery(distance=True),
            ),
            "vector query",
        )
        return list(res.objects)

    async def keyword_leg() -> list[Any]:
        if not plan.uses_keyword:
            return []
        res = await call(
            lambda: col.query.bm25(
                query=plan.text,
                query_properties=props,
                filters=filters,
                limit=plan.window,
                return_properties=kw_properties,
                include_vector=leg_vector,
                return_metadata=MetadataQuery(score=True),
            ),
            "keyword query",
        )
        return list(res.objects)

    # The legs are independent queries: run them together (one round trip of latency, not two).
    vector_objects, keyword_objects = await asyncio.gather(vector_leg(), keyword_leg())
    vector = [(o.uuid, 1.0 - float(o.metadata.distance)) for o in vector_objects]
    keyword = [(o.uuid, float(o.metadata.score)) for o in keyword_objects]
    objects: dict[Any, Any] = {o.uuid: o for o in [*vector_objects, *keyword_objects]}
    coverages: dict[Any, float] = {}
    if adaptive and keyword_objects:
        terms = content_terms(plan.text)
        coverages = {
            o.uuid: coverage(terms, _keyword_texts(o.properties, plan.keyword_fields))
            for o in keyword_objects
        }
    fused = fuse(keyword, vector, plan.alpha, plan.fusion, coverages, plan.strength_exponent)[
        plan.offset : plan.offset + plan.limit
    ]
    if page_only:
        objects = await _fetch_by_id(call, col, [uuid.UUID(str(f.key)) for f in fused], include_vector)
    hits = []
    for f in fused:
        o = objects.get(f.key)
        if o is None:  # deleted between the leg and the page fetch
            continue
        vec = _vector(o, target)
        cos = f.cosine if f.cosine is not None else _cosine(vec, plan)
        hits.append(
            Hit(
                properties_to_doc(o.properties),
                Scores(f.fused, f.keyword, f.vector, f.bm25, cos, vector_weight=f.vector_weight),
                vec if plan.include_vectors else None,
            )
        )
    return hits


def _keyword_texts(properties: dict[str, Any], fields: tuple[tuple[str, float], ...]) -> list[str]:
    texts: list[str] = []
    for name, _boost in fields:
        value = properties.get(name) or ""
        texts.extend(value if isinstance(value, list) else [str(value)])
    return texts


def _vector(o: Any, target: str) -> np.ndarray | None:
    v = (o.vector or {}).get(target)
    return None if v is None else np.asarray(v, dtype=np.float32)


def _cosine(vec: np.ndarray | None, plan: QueryPlan) -> float:
    if vec is None or plan.vector is None:
        return 0.0
    return float(vec @ plan.vector)


async def _fetch_by_id(
    call: Call, col: Any, ids: list[uuid.UUID], include_vector: list[str] | bool
) -> dict[Any, Any]:
    """The objects (all properties) of one result page, by id; absent ids were deleted meanwhile."""
    if not ids:
        return {}
    page = await call(
        lambda: col.query.fetch_objects(
            filters=Filter.by_id().contains_any(ids), limit=len(ids), include_vector=include_vector
        ),
        "page fetch",
    )
    return {o.uuid: o for o in page.objects}


def _hybrid_hit(ranked: Any, o: Any, plan: QueryPlan) -> Hit:
    """One hit from the hybrid result's scores (``ranked``) and the fetched object ``o``."""
    legs = parse_explain(ranked.metadata.explain_score)
    kw_raw, kw_part = legs.get("keyword", (None, 0.0))
    vec_raw, vec_part = legs.get("vector", (None, 0.0))
    vec = _vector(o, weaviate_vector(plan.vector_name))
    cos = vec_raw if vec_raw is not None else _cosine(vec, plan)
    scores = Scores(
        fused=float(ranked.metadata.score or 0.0),
        keyword_contribution=kw_part,
        vector_contribution=vec_part,
        bm25=kw_raw or 0.0,
        cosine_similarity=cos,
        vector_weight=plan.alpha,
    )
    return Hit(properties_to_doc(o.properties), scores, vec if plan.include_vectors else None)
