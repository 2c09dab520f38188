"""The embedded index's two legs over one tenant, pre-filtered by the allowed-slot mask.

The vector leg searches exactly when the allowed assets are few (<= exact_search_cutoff, like Weaviate's
flatSearchCutoff) and otherwise searches the graph, over-fetching until it has enough allowed candidates;
the keyword leg restricts tantivy to the allowed slots when they are few and over-fetches otherwise,
then re-scores its candidates exactly as Weaviate's BM25 does (see the parity test).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import tantivy

from services.search.backends.embedded.columns import _FIELD_INDEX
from services.search.backends.embedded.tenant import TenantIndex
from services.search.domain import BM25_B, BM25_K1, PRIMARY_VECTOR

# Below this many allowed slots, the keyword leg restricts tantivy to them with a term-set query.
_KEYWORD_TERMSET_MAX = 4096


def vector_leg(
    t: TenantIndex, name: str, q: np.ndarray, allowed: np.ndarray, n_allowed: int, k: int
) -> list[tuple[int, float]]:
    """The `k` allowed slots nearest to `q` on the named vector `name` (PRIMARY_VECTOR or a stored
    other one; an asset without that vector is never a candidate)."""
    vectors, graph, live = t.vectors, t.graph, t.columns.live
    if name != PRIMARY_VECTOR:
        space = t.named[name]
        assert space.graph is not None
        has = space.has[: len(allowed)]
        allowed = allowed[: len(has)] & has
        n_allowed = int(allowed.sum())
        vectors, graph, live = space.vectors, space.graph, len(space.graph)
    if n_allowed == 0:
        return []
    if n_allowed <= t.hnsw.exact_cutoff or n_allowed <= k:
        return _exact(vectors, q, allowed, k)
    # Graph search, over-fetching in proportion to the filter's selectivity; a filter the graph
    # cannot satisfy within 16x over-fetching is answered exactly.
    live = max(live, 1)
    fetch = min(live, max(k, int(k * live / n_allowed * 1.2) + 10))
    while fetch <= 16 * max(k, t.hnsw.ef_search):
        graph.expansion_search = max(t.hnsw.ef_search, fetch)  # type: ignore[misc]
        m = graph.search(q, fetch)
        keys = m.keys.astype(np.int64)
        ok = (keys < len(allowed)) & allowed[np.minimum(keys, len(allowed) - 1)]
        if ok.sum() >= k or fetch >= live:
            # The graph proposes, the float32 record vectors decide: exact cosine re-ranks every
            # allowed candidate (a few hundred dot products), so scores are exact whatever the
            # graph's dtype and the order does not suffer from its quantisation.
            keys = keys[ok]
            sims = vectors[keys] @ q
            order = np.argsort(-sims, kind="stable")[:k]
            return [(int(keys[i]), float(sims[i])) for i in order]
        fetch = min(live, fetch * 4)
    return _exact(vectors, q, allowed, k)


def _exact(vectors: np.ndarray, q: np.ndarray, allowed: np.ndarray, k: int) -> list[tuple[int, float]]:
    idx = np.flatnonzero(allowed)
    sims = vectors[idx] @ q
    top = min(k, len(idx))
    part = np.argpartition(-sims, top - 1)[:top] if top < len(idx) else np.arange(len(idx))
    order = part[np.argsort(-sims[part], kind="stable")]
    return [(int(idx[i]), float(sims[i])) for i in order]


def _term_weights(
    searcher: tantivy.Searcher,
    terms: list[str],
    fields: tuple[tuple[str, float], ...],
    scale: bool = True,
) -> list[tuple[str, str, float]]:
    """Per (term, field) clause boosts that turn tantivy's BM25 into Weaviate's.

    tantivy weighs a term in a field by that field's idf; Weaviate (BM25 over several properties)
    uses one idf per term, computed from the term's document frequency averaged over the searched
    properties that contain it. Scaling each clause by idf_weaviate / idf_field gives Weaviate's
    score (the tf and length-normalisation parts are the same formula).
    """
    n = max(searcher.num_docs, 1)

    def idf(df: float) -> float:
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    out = []
    for term in terms:
        dfs = {field: searcher.doc_freq(field, term) for field, _ in fields}
        present = [df for df in dfs.values() if df > 0]
        if not present:
            continue
        shared = idf(sum(present) // len(present))
        for field, boost in fields:
            if dfs[field] > 0:
                out.append((term, field, boost * shared / idf(dfs[field]) if scale else shared))
    return out


def keyword_leg(
    t: TenantIndex,
    terms: list[str],
    fields: tuple[tuple[str, float], ...],
    allowed: np.ndarray,
    n_allowed: int,
    k: int,
) -> list[tuple[int, float]]:
    if n_allowed == 0 or not terms:
        return []
    searcher = t.keyword.searcher()
    clauses = []
    for term, field, weight in _term_weights(searcher, terms, fields):
        tq = tantivy.Query.term_query(t.schema, field, term)
        clauses.append((tantivy.Occur.Should, tantivy.Query.boost_query(tq, weight)))
    if not clauses:
        return []
    query = tantivy.Query.boolean_query(clauses)
    if n_allowed <= _KEYWORD_TERMSET_MAX:
        slots = [int(s) for s in np.flatnonzero(allowed)]
        restrict = tantivy.Query.boost_query(tantivy.Query.term_set_query(t.schema, "slot", slots), 0.0)
        query = tantivy.Query.boolean_query([(tantivy.Occur.Must, query), (tantivy.Occur.Must, restrict)])
    # tantivy's BM25 (with Weaviate's idf) picks the candidates; they are then re-scored exactly as
    # Weaviate scores them (its average length counts only assets that have the property, tantivy's
    # counts all), and re-ranked. Twice the window plus a margin covers the small score differences.
    want = k + max(32, k // 2)
    # Over-fetch in proportion to the filter's selectivity (as the vector leg does): a filter that drops
    # a few percent (e.g. the assets still being analysed) would otherwise cost a second, 4x search.
    # (A filter of up to _KEYWORD_TERMSET_MAX slots is inside the query already.)
    live = max(t.columns.live, 1)
    restricted = n_allowed <= _KEYWORD_TERMSET_MAX or n_allowed >= live
    fetch = want if restricted else min(live, int(want * live / n_allowed * 1.1) + 8)
    while True:
        # No total hit count: it is not needed (fewer hits than asked for means the matches are
        # exhausted) and skipping it makes the tantivy search a little cheaper.
        res = searcher.search(query, fetch, count=False)
        hits = res.hits
        slots_found = searcher.fast_field_values("slot", [a for _, a in hits]) if hits else []
        cands = [
            int(slot)
            for slot in slots_found
            if slot is not None and int(slot) < len(allowed) and allowed[int(slot)] and int(slot) in t.docs
        ]
        if len(cands) >= want or len(hits) < fetch or fetch >= t.columns.live:
            break
        fetch *= 4
    weights = {(t, f): w for t, f, w in _term_weights(searcher, terms, fields, scale=False)}
    scorer = _bm25_scorer(t, terms, fields, weights)
    scored = [(slot, scorer(slot)) for slot in cands[:want]]
    scored = [x for x in scored if x[1] > 0]
    scored.sort(key=lambda x: -x[1])
    return scored[:k]


def _bm25_scorer(
    t: TenantIndex,
    terms: list[str],
    fields: tuple[tuple[str, float], ...],
    idfs: dict[tuple[str, str], float],
) -> Callable[[int], float]:
    """Weaviate's BM25 over several properties: sum over properties of boost * sum over query terms
    of idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)) (no (k1 + 1) factor).

    The per-query parts (each field's avgdl, the terms with a weight in it) are worked out once;
    the returned function scores one slot (it runs for every keyword candidate of every query).
    """
    plan = []
    for field, boost in fields:
        weighted = [(t, idfs[(t, field)]) for t in terms if (t, field) in idfs]
        if weighted:
            plan.append((_FIELD_INDEX[field], boost, weighted, t.columns.avgdl(field)))
    tokens = t.columns.tokens

    def score(slot: int) -> float:
        total = 0.0
        toks_by_field = tokens[slot]
        for index, boost, weighted, avgdl in plan:
            toks = toks_by_field[index]
            if not toks:
                continue
            norm = BM25_K1 * (1 - BM25_B + BM25_B * len(toks) / avgdl)
            part = 0.0
            for t, idf in weighted:
                tf = toks.count(t)
                if tf:
                    part += idf * tf / (tf + norm)
            total += boost * part
        return total

    return score
