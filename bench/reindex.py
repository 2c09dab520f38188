"""Re-index throughput against ingest-encode throughput of the same images, and search latency during a
re-index against idle, in one run (issue 18; docs/LIFECYCLE.md).

    .venv/bin/python -m bench.reindex [--images 400] [--queries 150] [--rate 0] [--json OUT]

Processes (all real, embedded defaults, analysis off so ingest is encode + originals + index write):
the "demo" and the "photo" encoders (ONNX Runtime in process), two embedded search services, and two
gateways:
- G1 (default encoder demo; model_encoders demo + photo; re-index rate unlimited) holds tenant globex,
  ingested with demo before anything is timed; it is re-indexed to photo;
- G2 (default encoder photo, its own search service) is the baseline: the same images ingested with
  the photo encoder, one stream, the way `imagesearch ingest` sends them.
Both paths use the same photo encoder process with the same batching (16 images per call, 2 calls
in flight: ingest_encode_batch/concurrency vs reindex_batch/concurrency).

Figures: ingest img/s (G2, wall time of the stream), re-index img/s (G1, StartReindex until every
asset holds the photo vectors), their ratio (target >= 0.9), each measured with nothing else running;
then search latency through G1 (c=1, every query text distinct, so no cache answers: encode + search
+ rerank) while idle, and while the same re-index runs again (after a gc of the photo vectors),
p50/p99 and the p99 ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
from imagesearch.v1 import admin_pb2, admin_pb2_grpc, common_pb2, gateway_pb2, gateway_pb2_grpc

from bench.perf_report import REPO, loadavg

GUS = [("authorization", "Bearer globex-gus")]
KEYRING = {
    "tenants": {"globex": {"safety_threshold": 1.0}, "acme": {"safety_threshold": 1.0}},
    "api_keys": {
        "globex-gus": {"tenant": "globex", "subject": "gus", "roles": ["admin"]},
        "acme-ann": {"tenant": "acme", "subject": "ann", "roles": ["admin"]},
    },
}
DATA = Path.home() / ".cache/imagesearch/data"


def package_ref(name: str) -> common_pb2.ModelRef:
    p = json.loads((REPO / f"models/{name}/package/package.json").read_text())
    return common_pb2.ModelRef(name=p["name"], version=str(p["version"]))


def sample(n: int, skip: int = 0) -> list[tuple[str, str, bytes]]:
    """(asset id, caption, bytes) of held-out images of the demo manifest (open data, fetched once),
    distinct bytes only (a repeated image would be a DUPLICATE at ingest)."""
    rows = [
        json.loads(line) for line in (REPO / "models/demo/manifest.jsonl").read_text().splitlines() if line
    ]
    out, seen = [], set()
    for r in rows:
        if r["split"] != "heldout" or not (DATA / r["path"]).is_file():
            continue
        data = (DATA / r["path"]).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest not in seen:
            seen.add(digest)
            out.append((r["id"].replace(":", "-"), r["caption"], data))
    return out[skip : skip + n]


def requests(items: list[tuple[str, str, bytes]]) -> Any:
    for aid, caption, data in items:
        yield gateway_pb2.IngestRequest(
            asset_id=aid, image=data, caption=caption, license=common_pb2.License(name="CC0-1.0")
        )


def ingest(stub: Any, items: list[tuple[str, str, bytes]], md: Any = GUS) -> float:
    t0 = time.perf_counter()
    acks = list(stub.Ingest(requests(items), metadata=md, timeout=1800))
    wall = time.perf_counter() - t0
    bad = [a for a in acks if a.outcome != gateway_pb2.INGEST_OUTCOME_CREATED]
    assert not bad, bad[:3]
    return wall


class Searcher(threading.Thread):
    """Searches at concurrency 1 with distinct texts until stopped (or `limit` queries)."""

    def __init__(self, stub: Any, texts: list[str], limit: int, tag: str) -> None:
        super().__init__(daemon=True)
        self.stub, self.texts, self.limit, self.tag = stub, texts, limit, tag
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.failures = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set() and i < self.limit:
            text = f"{self.texts[i % len(self.texts)]} {self.tag}{i}"
            t0 = time.perf_counter()
            try:
                self.stub.Search(gateway_pb2.SearchRequest(text=text, page_size=10), metadata=GUS, timeout=30)
                self.latencies.append(time.perf_counter() - t0)
            except grpc.RpcError:
                self.failures += 1
            i += 1


def reindex(adm: Any, target: common_pb2.ModelRef, n: int, on_done: Any = None) -> float:
    """StartReindex until every asset holds the target's vectors (the sweep pass is not waited for)."""
    t0 = time.perf_counter()
    adm.StartReindex(admin_pb2.StartReindexRequest(target=target), metadata=GUS, timeout=30)
    while True:
        job = adm.GetReindexJob(admin_pb2.GetReindexJobRequest(), metadata=GUS, timeout=30).job
        if job.reindexed >= n or job.state != admin_pb2.REINDEX_STATE_RUNNING:
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if on_done is not None:
        on_done()
    assert job.reindexed == n, job
    while job.state == admin_pb2.REINDEX_STATE_RUNNING:  # let the sweep finish before the next step
        time.sleep(0.2)
        job = adm.GetReindexJob(admin_pb2.GetReindexJobRequest(), metadata=GUS, timeout=30).job
    return wall


def pct(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return (
        statistics.median(ordered) * 1000,
        ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))] * 1000,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument(
        "--queries", type=int, default=150, help="idle searches (the job's searches run while it lasts)"
    )
    ap.add_argument(
        "--rate", type=float, default=0.0, help="G1's reindex_rate_per_s (0: unlimited, the throughput run)"
    )
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    from tests.service_process import ServiceProcess

    demo_ref, photo_ref = package_ref("demo"), package_ref("photo")
    items = sample(args.images)
    warm = sample(16, skip=args.images)
    tmp = Path(tempfile.mkdtemp(prefix="bench-reindex-"))
    procs: list[Any] = []

    def start(module: str, env: dict[str, str]) -> Any:
        p = ServiceProcess(
            module, {**env, "IMAGESEARCH_" + module.split(".")[1].upper() + "_LOG_LEVEL": "warning"}
        )
        procs.append(p)
        return p.start(timeout_s=240)

    try:
        demo = start(
            "services.encoder",
            {"IMAGESEARCH_ENCODER_MODEL_PACKAGE": "demo", "IMAGESEARCH_ENCODER_BACKEND": "onnxruntime"},
        )
        photo = start(
            "services.encoder",
            {"IMAGESEARCH_ENCODER_MODEL_PACKAGE": "photo", "IMAGESEARCH_ENCODER_BACKEND": "onnxruntime"},
        )
        s1 = start(
            "services.search",
            {"IMAGESEARCH_SEARCH_DATA_DIR": str(tmp / "s1"), "IMAGESEARCH_SEARCH_CACHE": "memory"},
        )
        s2 = start(
            "services.search",
            {"IMAGESEARCH_SEARCH_DATA_DIR": str(tmp / "s2"), "IMAGESEARCH_SEARCH_CACHE": "memory"},
        )
        common = {
            "IMAGESEARCH_GATEWAY_API_KEYS_JSON": json.dumps(KEYRING),
            "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",
            "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
        }
        g1 = start(
            "services.gateway",
            {
                **common,
                "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": demo.address,
                "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": s1.address,
                "IMAGESEARCH_GATEWAY_DATA_DIR": str(tmp / "g1"),
                "IMAGESEARCH_GATEWAY_BLOB_DIR": str(tmp / "g1-blobs"),
                "IMAGESEARCH_GATEWAY_MODEL_ENCODERS": json.dumps(
                    {
                        f"{demo_ref.name}:{demo_ref.version}": demo.address,
                        f"{photo_ref.name}:{photo_ref.version}": photo.address,
                    }
                ),
                "IMAGESEARCH_GATEWAY_REINDEX_RATE_PER_S": str(args.rate),
                "IMAGESEARCH_GATEWAY_MODEL_STATE_TTL_S": "0.2",
            },
        )
        g2 = start(
            "services.gateway",
            {
                **common,
                "IMAGESEARCH_GATEWAY_ENCODER_ADDRESS": photo.address,
                "IMAGESEARCH_GATEWAY_SEARCH_ADDRESS": s2.address,
                "IMAGESEARCH_GATEWAY_DATA_DIR": str(tmp / "g2"),
                "IMAGESEARCH_GATEWAY_BLOB_DIR": str(tmp / "g2-blobs"),
            },
        )
        opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        gw1 = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(g1.address, options=opts))
        gw2 = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(g2.address, options=opts))
        adm = admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(g1.address, options=opts))

        # Setup (untimed): tenant globex on G1 with demo; both encoders and both paths warmed.
        ingest(gw1, items)
        ingest(gw2, warm, md=[("authorization", "Bearer acme-ann")])
        ingest(gw1, warm, md=[("authorization", "Bearer acme-ann")])
        texts = [c for _, c, _ in items]

        ingest_s = ingest(gw2, items)  # the baseline: the same images, ingested with photo
        reindex_s = reindex(adm, photo_ref, len(items))  # nothing else running, like the baseline

        idle = Searcher(gw1, texts, args.queries, "idle")
        idle.run()
        # Search latency during a re-index: the photo vectors removed (gc), the same job again.
        adm.RemoveModel(admin_pb2.RemoveModelRequest(model=photo_ref), metadata=GUS, timeout=600)
        during = Searcher(gw1, texts, 10**9, "busy")
        during.start()
        latency_job_s = reindex(adm, photo_ref, len(items), on_done=during.stop.set)
        during.join()

        ingest_rate, reindex_rate = len(items) / ingest_s, len(items) / reindex_s
        idle_p50, idle_p99 = pct(idle.latencies)
        busy_p50, busy_p99 = pct(during.latencies)
        figures = {
            "images": len(items),
            "rate_limit_per_s": args.rate,
            "ingest_img_per_s": round(ingest_rate, 1),
            "reindex_img_per_s": round(reindex_rate, 1),
            "reindex_over_ingest": round(reindex_rate / ingest_rate, 2),
            "search_idle_ms": {
                "n": len(idle.latencies),
                "p50": round(idle_p50, 1),
                "p99": round(idle_p99, 1),
            },
            "search_during_reindex_ms": {
                "n": len(during.latencies),
                "p50": round(busy_p50, 1),
                "p99": round(busy_p99, 1),
            },
            "p99_during_over_idle": round(busy_p99 / idle_p99, 2),
            "search_failures": idle.failures + during.failures,
            "loadavg": loadavg(),
        }
        limit = args.rate or "none"
        print(f"images: {len(items)} (held-out demo-manifest images; analysis off); rate limit {limit}")
        print(f"ingest with photo (G2):  {ingest_rate:7.1f} img/s  ({ingest_s:.1f} s)")
        print(f"re-index to photo (G1):  {reindex_rate:7.1f} img/s  ({reindex_s:.1f} s)")
        print(f"re-index / ingest:       {reindex_rate / ingest_rate:7.2f}x  (target >= 0.9)")
        n_idle, n_busy = len(idle.latencies), len(during.latencies)
        print(f"search idle:             p50 {idle_p50:6.1f} ms  p99 {idle_p99:6.1f} ms  (n={n_idle})")
        print(
            f"search during re-index:  p50 {busy_p50:6.1f} ms  p99 {busy_p99:6.1f} ms  (n={n_busy}; "
            f"that job took {latency_job_s:.1f} s)"
        )
        print(
            f"p99 during / idle:       {busy_p99 / idle_p99:7.2f}x   failures: {figures['search_failures']}"
        )
        print(f"load average: {figures['loadavg']}")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    main()
