"""Cost of the drift hooks on the hot path, and of a Prometheus scrape of the drift gauges.

    python -m bench.drift [--dims 256 384 512 1280] [--n 20000] [--keys 100]

Per dimension: µs per `observe_query` (vector + best score: the search-flow hook, histogram included)
and per `observe_image` (the ingest hook), against the same run's baseline of one L2 normalisation of
the same vector (`v / np.linalg.norm(v)`, which the search flow already does per query), printed as a
ratio. Then the time of one collection of every gateway_drift_* gauge with `--keys` (tenant, model
version) pairs tracked. Single-threaded; figures go to docs/OPERATIONS.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from prometheus_client import REGISTRY, generate_latest

from services.gateway.domain import ModelRef
from services.gateway.drift import DriftConfig, DriftMonitor

MODEL = ModelRef("bench", "1")


def per_call_us(fn: Callable[[int], object], n: int) -> float:
    """Best of three runs of n calls, in µs per call."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


def hook_costs(cfg: DriftConfig, dim: int, n: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """µs per observe_query, per observe_image, and per baseline normalisation of the same vectors."""
    monitor = DriftMonitor(cfg)
    vectors = rng.standard_normal((256, dim)).astype(np.float32)
    scores = rng.uniform(0, 1, 256).tolist()
    base = per_call_us(lambda i: vectors[i & 255] / np.linalg.norm(vectors[i & 255]), n)
    query = per_call_us(lambda i: monitor.observe_query("t", MODEL, vectors[i & 255], scores[i & 255]), n)
    image = per_call_us(lambda i: monitor.observe_image("t", MODEL, vectors[i & 255]), n)
    return query, image, base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[256, 384, 512, 1280])
    ap.add_argument("--n", type=int, default=20000, help="calls per measurement")
    ap.add_argument("--keys", type=int, default=100, help="(tenant, model version) pairs for the scrape")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cfg = DriftConfig(500.0, 50, 0.3, 0.5, None, max_keys=4 * args.keys)

    print(f"{'dim':>5} {'query µs':>9} {'image µs':>9} {'normalise µs':>13} {'query/normalise':>16}")
    for dim in args.dims:
        query, image, base = hook_costs(cfg, dim, args.n, rng)
        print(f"{dim:>5} {query:>9.1f} {image:>9.1f} {base:>13.1f} {query / base:>15.1f}x")

    monitor = DriftMonitor(cfg)
    vec = rng.standard_normal(512).astype(np.float32)
    for k in range(args.keys):
        for _ in range(60):  # past min_samples: every key has a reference and a score
            monitor.observe_query(
                f"tenant-{k}", MODEL, vec + rng.standard_normal(512).astype(np.float32), 0.5
            )
    start = time.perf_counter()
    runs = 20
    for _ in range(runs):
        generate_latest(REGISTRY)
    ms = (time.perf_counter() - start) / runs * 1000
    print(f"scrape of the whole registry with {args.keys} tenants tracked (dim 512): {ms:.1f} ms")


if __name__ == "__main__":
    main()
