"""Drift statistics (pure logic): running centroid and spread, decay, best scores, references kept as
files, the automatic first reference, the score, and the Prometheus export."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY, generate_latest

from services.gateway.domain import ModelRef
from services.gateway.drift import DriftConfig, DriftMonitor, RunningStats, Summary, drift_score

DIM = 64
MODEL = ModelRef("clip", "1")


def config(tmp_path: Path | None = None, **over: object) -> DriftConfig:
    fields: dict[str, object] = {
        "half_life": 1e9,  # no decay unless a test asks for it
        "min_samples": 10_000,
        "low_score_threshold": 0.3,
        "centroid_weight": 0.5,
        "reference_dir": tmp_path,
        "max_keys": 16,
    }
    fields.update(over)
    return DriftConfig(**fields)  # type: ignore[arg-type]


def cluster(rng: np.random.Generator, center: np.ndarray, n: int, spread: float = 0.3) -> np.ndarray:
    return (center + spread * rng.standard_normal((n, center.size))).astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(3)


def test_centroid_and_mean_cosine_are_exact_without_decay(rng: np.random.Generator) -> None:
    vectors = cluster(rng, rng.standard_normal(DIM), 200) * rng.uniform(0.5, 3.0, (200, 1)).astype(np.float32)
    stats = RunningStats(half_life=1e12, low_score_threshold=0.3)
    for v in vectors:
        assert stats.add(v)
    s = stats.summary()
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    centroid = units.mean(axis=0) / np.linalg.norm(units.mean(axis=0))
    norms = np.linalg.norm(vectors, axis=1)
    assert s.samples == 200
    assert np.allclose(s.centroid, centroid, atol=1e-6)
    assert s.mean_cosine == pytest.approx(float((units @ centroid).mean()), abs=1e-6)
    assert s.norm_mean == pytest.approx(float(norms.mean()), rel=1e-6)
    assert s.norm_std == pytest.approx(float(norms.std()), rel=1e-4)


def test_best_scores_give_mean_spread_and_low_share() -> None:
    stats = RunningStats(half_life=1e12, low_score_threshold=0.3)
    scores = [0.1, 0.2, 0.5, 0.6, 0.7, None]
    for score in scores:
        stats.add(np.ones(4, np.float32), score)
    s = stats.summary()
    given = [x for x in scores if x is not None]
    assert s.scored == pytest.approx(5)
    assert s.score_mean == pytest.approx(float(np.mean(given)))
    assert s.score_std == pytest.approx(float(np.std(given)), rel=1e-6)
    assert s.low_score_share == pytest.approx(2 / 5)


def test_zero_and_non_finite_vectors_are_not_counted() -> None:
    stats = RunningStats(half_life=10, low_score_threshold=0.3)
    assert not stats.add(np.zeros(4, np.float32))
    assert not stats.add(np.array([1.0, math.nan, 0, 0], np.float32))
    assert stats.summary().samples == 0


def test_a_new_dimension_starts_over() -> None:
    stats = RunningStats(half_life=10, low_score_threshold=0.3)
    stats.add(np.ones(4, np.float32))
    stats.add(np.ones(8, np.float32))
    s = stats.summary()
    assert len(s.centroid) == 8 and s.weight == pytest.approx(1.0)


def test_decay_follows_a_shift_within_a_few_half_lives(rng: np.random.Generator) -> None:
    a, b = rng.standard_normal(DIM), rng.standard_normal(DIM)
    stats = RunningStats(half_life=20, low_score_threshold=0.3)
    for v in cluster(rng, a, 200):
        stats.add(v)
    for v in cluster(rng, b, 100):  # five half-lives: a's weight is down to ~3%
        stats.add(v)
    centroid = np.asarray(stats.summary().centroid)
    assert centroid @ (b / np.linalg.norm(b)) > 0.95
    assert stats.summary().weight == pytest.approx(1 / (1 - 0.5 ** (1 / 20)), rel=1e-3)


def test_concurrent_updates_are_all_counted(rng: np.random.Generator) -> None:
    stats = RunningStats(half_life=1e12, low_score_threshold=0.3)
    vectors = cluster(rng, rng.standard_normal(DIM), 400)

    def feed(part: np.ndarray) -> None:
        for v in part:
            stats.add(v, 0.5)

    threads = [threading.Thread(target=feed, args=(vectors[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = stats.summary()
    assert s.samples == 400 and s.weight == pytest.approx(400) and s.scored == pytest.approx(400)


def _summary(centroid: list[float], score_mean: float, score_std: float, scored: float = 10.0) -> Summary:
    return Summary(10, 10.0, centroid, 0.9, 1.0, 0.0, scored, score_mean, score_std, 0.0)


def test_drift_score_formula() -> None:
    ref = _summary([1.0, 0.0], 0.6, 0.05)
    same = drift_score(_summary([1.0, 0.0], 0.6, 0.05), ref, 0.5)
    assert same.score == pytest.approx(0.0) and same.centroid_shift == pytest.approx(0.0)
    turned = drift_score(_summary([math.cos(0.5), math.sin(0.5)], 0.5, 0.05), ref, 0.5)
    assert turned.centroid_shift == pytest.approx((1 - math.cos(0.5)) / 2)
    assert turned.score_shift == pytest.approx(0.5)  # the mean moved by two reference spreads
    assert turned.score == pytest.approx(0.5 * (1 - math.cos(0.5)) / 2 + 0.5 * 0.5)
    # Opposite centroids give 1; a tiny reference spread is floored; a stream without best scores
    # is judged on its centroid alone.
    opposite = drift_score(_summary([-1.0, 0.0], 0.6, 0.0), _summary([1.0, 0.0], 0.6, 0.0), 0.5)
    assert opposite.score == pytest.approx(0.5) and opposite.centroid_shift == pytest.approx(1.0)
    floored = drift_score(_summary([1.0, 0.0], 0.64, 0.0), _summary([1.0, 0.0], 0.6, 0.0), 0.0)
    assert floored.score == pytest.approx(0.04 / (0.04 + 0.04))
    images = drift_score(_summary([0.0, 1.0], 0.0, 0.0, scored=0.0), _summary([1.0, 0.0], 0, 0, 0), 0.5)
    assert images.score == pytest.approx(0.5) and images.score_shift is None


def test_reference_files_survive_a_restart_and_names_stay_inside_the_dir(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    tenant = "../../etc/acme"
    center = rng.standard_normal(DIM)
    monitor = DriftMonitor(config(tmp_path))
    for v in cluster(rng, center, 50):
        monitor.observe_query(tenant, MODEL, v, 0.6)
        monitor.observe_image(tenant, MODEL, v)
    reports = monitor.take_reference(tenant)
    assert {r.stream for r in reports} == {"image", "query"} and all(r.drift is None for r in reports)
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1 and files[0].parent.parent == tmp_path

    restarted = DriftMonitor(config(tmp_path))
    for v in cluster(rng, center, 50):
        restarted.observe_query(tenant, MODEL, v, 0.6)
    (query,) = [r for r in restarted.reports() if r.stream == "query"]
    assert query.drift is not None and query.drift.score < 0.05


def test_an_unreadable_reference_is_ignored(tmp_path: Path, rng: np.random.Generator) -> None:
    monitor = DriftMonitor(config(tmp_path))
    monitor.observe_query("acme", MODEL, rng.standard_normal(DIM), 0.5)
    monitor.take_reference("acme")
    (path,) = tmp_path.rglob("*.json")
    path.write_text("{not json")
    restarted = DriftMonitor(config(tmp_path))
    restarted.observe_query("acme", MODEL, rng.standard_normal(DIM), 0.5)
    assert [r.drift for r in restarted.reports()] == [None]


def test_each_stream_gets_a_reference_once_it_has_min_samples(rng: np.random.Generator) -> None:
    monitor = DriftMonitor(config(min_samples=20))
    center = rng.standard_normal(DIM)
    for v in cluster(rng, center, 19):
        monitor.observe_image("acme", MODEL, v)
    assert [r.reference_taken_at for r in monitor.reports()] == [None]
    for v in cluster(rng, center, 30):
        monitor.observe_image("acme", MODEL, v)
        monitor.observe_query("acme", MODEL, v, 0.5)
    reports = {r.stream: r for r in monitor.reports()}
    assert reports["image"].drift is not None and reports["query"].drift is not None


def test_shifted_queries_raise_the_score_and_a_new_reference_resets_it(rng: np.random.Generator) -> None:
    monitor = DriftMonitor(config(half_life=30))
    usual, other = rng.standard_normal(DIM), rng.standard_normal(DIM)

    def feed(center: np.ndarray, score: float, n: int = 120) -> float | None:
        for v in cluster(rng, center, n):
            monitor.observe_query("acme", MODEL, v, score + 0.03 * float(rng.standard_normal()))
        (r,) = monitor.reports()
        return None if r.drift is None else r.drift.score

    assert feed(usual, 0.6) is None  # no reference yet
    monitor.take_reference("acme", MODEL)
    same = feed(usual, 0.6)
    shifted = feed(other, 0.3)
    monitor.take_reference("acme")
    after = feed(other, 0.3, n=1)
    assert same is not None and shifted is not None and after is not None
    assert same < 0.1 and shifted > 0.3 and after < 0.05, (same, shifted, after)


def test_the_gauges_are_exported(rng: np.random.Generator) -> None:
    monitor = DriftMonitor(config())
    for v in cluster(rng, rng.standard_normal(DIM), 5):
        monitor.observe_query("export-tenant", MODEL, v, 0.1)
    monitor.take_reference("export-tenant")
    text = generate_latest(REGISTRY).decode()
    labels = 'model="clip",stream="query",tenant="export-tenant",version="1"'
    for name in ("score", "centroid_shift", "low_score_share", "mean_cosine_to_centroid", "samples_total"):
        assert any(
            line.startswith(f"gateway_drift_{name}{{") and all(p in line for p in labels.split(","))
            for line in text.splitlines()
        ), name
    assert 'gateway_drift_best_score_bucket{le="0.2",model="clip",tenant="export-tenant",version="1"}' in text
