"""Runs every judged query under every configuration against the live gateway (Search RPC) and
records the ranked asset ids and the latency the caller saw."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc, search_pb2

from services.evaluation.domain import EvalConfig, Judgement, QueryRun

_FUSION_PB = {
    "adaptive": search_pb2.FUSION_TYPE_ADAPTIVE,
    "relative_score": search_pb2.FUSION_TYPE_RELATIVE_SCORE,
    "ranked": search_pb2.FUSION_TYPE_RANKED,
}
Progress = Callable[[int, int], None]


def search_request(j: Judgement, cfg: EvalConfig, depth: int) -> gateway_pb2.SearchRequest:
    """The Search request of one judged query under one configuration (unset knobs: server defaults)."""
    req = gateway_pb2.SearchRequest(text=j.text, page_size=depth)
    if j.image is not None:
        req.image = j.image.read_bytes()
    if cfg.alpha is not None:
        req.alpha = cfg.alpha
    if cfg.fusion is not None:
        req.fusion = _FUSION_PB[cfg.fusion]
    req.rerank.disable = not cfg.rerank
    if cfg.text_weight is not None:
        req.rerank.text_weight = cfg.text_weight
    if cfg.mmr_lambda is not None:
        req.rerank.mmr_lambda = cfg.mmr_lambda
    return req


class Runner:
    def __init__(
        self,
        stub: gateway_pb2_grpc.GatewayServiceStub,
        metadata: Sequence[tuple[str, str]],
        *,
        depth: int = 10,
        concurrency: int = 4,
        timeout_s: float = 30.0,
    ) -> None:
        self.stub = stub
        self.metadata = tuple(metadata)
        self.depth = depth
        self.concurrency = concurrency
        self.timeout_s = timeout_s

    def run(
        self, judgements: Sequence[Judgement], configs: Sequence[EvalConfig], progress: Progress | None = None
    ) -> list[QueryRun]:
        tasks = [(j, cfg) for cfg in configs for j in judgements]
        done = 0
        out: list[QueryRun] = []
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for run in pool.map(lambda t: self.one(*t), tasks):
                out.append(run)
                done += 1
                if progress is not None:
                    progress(done, len(tasks))
        return out

    def one(self, j: Judgement, cfg: EvalConfig) -> QueryRun:
        req = search_request(j, cfg, self.depth)
        start = time.perf_counter()
        try:
            resp = self.stub.Search(req, metadata=self.metadata, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            elapsed = (time.perf_counter() - start) * 1000
            error = f"{exc.code().name}: {exc.details()}"
            return QueryRun(j.query_id, j.family, cfg.name, (), elapsed, error)
        elapsed = (time.perf_counter() - start) * 1000
        ranked = tuple(r.asset.asset_id for r in resp.results)
        return QueryRun(j.query_id, j.family, cfg.name, ranked, elapsed)
