"""Shadow queries: a candidate model version answers a share of searches beside the active one, is
compared, and is never returned (issue 18 part 4; docs/LIFECYCLE.md).

For a sampled first page with a vector leg, after the caller's page is served, a background task
encodes the query with the candidate's encoder and runs the same first-stage query (same text, filter,
alpha, fusion: the caller's visibility filter included) once with the active version's vector and once
with the candidate's, top 10 each. Per query it records overlap@10 (shared ids / 10) and the Spearman
rank correlation of the shared ids' ranks (when at least two are shared) as Prometheus histograms. A
tenant that does not hold the candidate's vectors yet is counted as skipped. At most
`shadow_max_in_flight` comparisons run at once; beyond that a sample is dropped (counted), so shadow
work never queues behind the caller's searches.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import grpc
import structlog
from prometheus_client import Counter, Histogram

from services.common.errors import DomainError, FailedPrecondition
from services.gateway.backends.base import SearchClient
from services.gateway.domain import ModelRef, QuerySpec, Vector
from services.gateway.model_versions import ModelVersions

log = structlog.get_logger("gateway.shadow")

SHADOW_QUERIES = Counter(
    "gateway_shadow_queries_total",
    "Shadow comparisons of a candidate model version, by outcome (compared, skipped: the tenant does "
    "not hold it; dropped: too many in flight; failed).",
    ["candidate", "outcome"],
)
SHADOW_OVERLAP = Histogram(
    "gateway_shadow_overlap_at_10",
    "Share of the active version's first-stage top 10 that the candidate's top 10 also holds.",
    ["candidate"],
    buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
SHADOW_RANK_CORRELATION = Histogram(
    "gateway_shadow_rank_correlation",
    "Spearman correlation of the ranks of the ids both top 10s hold (queries sharing at least two).",
    ["candidate"],
    buckets=(-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 0.9, 1.0),
)
TOP_K = 10


def overlap_at_k(active: list[str], candidate: list[str], k: int = TOP_K) -> float:
    return len(set(active[:k]) & set(candidate[:k])) / k


def rank_correlation(active: list[str], candidate: list[str], k: int = TOP_K) -> float | None:
    """Spearman's rho over the ids both top-k lists hold (None when fewer than two are shared)."""
    a, c = active[:k], candidate[:k]
    shared = [x for x in a if x in c]
    n = len(shared)
    if n < 2:
        return None
    ra = {x: i for i, x in enumerate(sorted(shared, key=a.index))}
    rc = {x: i for i, x in enumerate(sorted(shared, key=c.index))}
    d2 = sum((ra[x] - rc[x]) ** 2 for x in shared)
    return 1.0 - 6.0 * d2 / (n * (n * n - 1))


class Shadow:
    def __init__(
        self,
        search: SearchClient,
        models: ModelVersions,
        candidate: ModelRef,
        share: float,
        max_in_flight: int,
    ) -> None:
        self._search = search
        self._models = models
        self.candidate = candidate
        self._label = f"{candidate.name}:{candidate.version}"
        self._share = share
        self._slots = asyncio.Semaphore(max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()

    def sample(self, spec: QuerySpec, text: str, image: bytes) -> None:
        """Maybe start a comparison for this served query (returns at once)."""
        if spec.vector is None or spec.model == self.candidate or random.random() >= self._share:
            return
        if self._slots.locked():
            SHADOW_QUERIES.labels(self._label, "dropped").inc()
            return
        task = asyncio.create_task(self._compare(spec, text, image))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _compare(self, spec: QuerySpec, text: str, image: bytes) -> None:
        async with self._slots:
            try:
                vector = await self._encode(text, image)
                base = replace(spec, limit=TOP_K, offset=0, include_vectors=False, skip_cache=False)
                active, candidate = await asyncio.gather(
                    self._search.query(base),
                    self._search.query(replace(base, vector=vector, model=self.candidate, vector_name="")),
                )
            except DomainError as exc:
                if exc.code == grpc.StatusCode.FAILED_PRECONDITION:  # the tenant does not hold it (yet)
                    SHADOW_QUERIES.labels(self._label, "skipped").inc()
                    return
                SHADOW_QUERIES.labels(self._label, "failed").inc()
                log.info("shadow comparison failed", candidate=self._label, detail=exc.message)
                return
            a = [h.asset.asset_id for h in active.hits]
            c = [h.asset.asset_id for h in candidate.hits]
            SHADOW_OVERLAP.labels(self._label).observe(overlap_at_k(a, c))
            rho = rank_correlation(a, c)
            if rho is not None:
                SHADOW_RANK_CORRELATION.labels(self._label).observe(rho)
            SHADOW_QUERIES.labels(self._label, "compared").inc()

    async def _encode(self, text: str, image: bytes) -> Vector:
        encoder = self._models.encoder_of(self.candidate)
        if encoder is None:
            raise FailedPrecondition(f"no encoder for {self._label}")
        batch = await (encoder.encode_texts([text]) if text else encoder.encode_images([image]))
        item = batch.items[0]
        if item.vector is None or batch.model != self.candidate:
            raise FailedPrecondition(f"the {self._label} encoder did not encode the query")
        return item.vector
