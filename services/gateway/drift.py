"""Drift you can see: running statistics of the vectors the gateway sees, per tenant and model version,
against a reference snapshot, exported to Prometheus.

Two streams per (tenant, model version):
- "image": the primary vector of every newly encoded ingest image;
- "query": the primary vector of every search the gateway embedded (first page, not from a cache),
  with the best raw cosine its first stage found.

Each stream keeps exponentially decayed sums (half-life in samples, from settings): the sum of unit
vectors (its direction is the running centroid, its length over the weight is the mean cosine to that
centroid), the first two moments of the vector norms, of the best scores, and the share of queries
whose best score is below a threshold. One update is O(dim) under the stream's lock.

A reference is a snapshot of those statistics, kept as one JSON file per tenant and model version
(or in memory when no directory is configured). It is taken explicitly (`DriftMonitor.take_reference`:
the TakeDriftReference RPC, and the model lifecycle at activation) or, for a stream that has none yet,
automatically once it has `min_samples` samples. The drift score compares the running statistics with
the reference (formula in docs/OPERATIONS.md and in `drift_score`).

The Prometheus gauges are computed at scrape time by one collector over every live monitor, so the hot
path pays no metric calls except the best-score histogram.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import numpy as np
import structlog
from cachetools import LRUCache
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common.files import write_json_durably
from services.gateway.domain import ModelRef, Vector
from services.gateway.settings import GatewaySettings

log = structlog.get_logger("gateway.drift")

Stream = Literal["image", "query"]
STREAMS: tuple[Stream, ...] = ("image", "query")
_LABELS = ("tenant", "model", "version", "stream")
# A reference's best-score spread is floored: a reference of near-identical queries would otherwise
# turn any small change of the mean into full drift.
_SCORE_SPREAD_FLOOR = 0.02
_REFERENCE_FORMAT = 1

BEST_SCORE = Histogram(
    "gateway_drift_best_score",
    "Best raw cosine of each embedded search's first stage (first pages not served from a cache).",
    ["tenant", "model", "version"],
    buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)


@dataclass(frozen=True)
class DriftConfig:
    half_life: float  # samples after which a sample weighs half
    min_samples: int  # before a stream gets an automatic reference and a score
    low_score_threshold: float  # best score below which a query counts as poorly matched
    centroid_weight: float  # share of the centroid term in a query stream's score
    reference_dir: Path | None  # None: references are kept in memory only
    max_keys: int  # (tenant, model version) pairs tracked; least recently updated dropped beyond

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> DriftConfig:
        return cls(
            half_life=s.drift_half_life,
            min_samples=s.drift_min_samples,
            low_score_threshold=s.drift_low_score_threshold,
            centroid_weight=s.drift_centroid_weight,
            reference_dir=s.drift_reference_dir,
            # A few model versions per tenant live at once (active, candidate, previous).
            max_keys=4 * s.max_tenants_tracked,
        )


@dataclass(frozen=True)
class Summary:
    """A stream's statistics at one instant (also the stored form of a reference)."""

    samples: int  # all-time count
    weight: float  # decayed count
    centroid: list[float]  # unit vector (empty when no sample)
    mean_cosine: float  # mean cosine of the (decayed) samples to the centroid
    norm_mean: float
    norm_std: float
    scored: float  # decayed count of samples with a best score
    score_mean: float
    score_std: float
    low_score_share: float

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Summary:
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Drift:
    score: float
    centroid_shift: float
    score_shift: float | None  # None for a stream without best scores


def drift_score(current: Summary, reference: Summary, centroid_weight: float) -> Drift:
    """How far a stream's running statistics are from its reference, in [0, 1]:

        centroid_shift = (1 - cos(current centroid, reference centroid)) / 2
        score_shift    = d / (d + 2 * max(reference best-score std, 0.02)),  d = |mean best - reference mean|
        score          = w * centroid_shift + (1 - w) * score_shift   (w = centroid_weight)

    score_shift is 0.5 when the mean best score moved by two reference spreads. A stream without best
    scores (images) is judged on its centroid alone (score = centroid_shift)."""
    cos = float(np.dot(np.asarray(current.centroid), np.asarray(reference.centroid)))
    centroid_shift = min(1.0, max(0.0, (1.0 - cos) / 2.0))
    if current.scored <= 0 or reference.scored <= 0:
        return Drift(centroid_shift, centroid_shift, None)
    moved = abs(current.score_mean - reference.score_mean)
    spread = 2.0 * max(reference.score_std, _SCORE_SPREAD_FLOOR)
    score_shift = moved / (moved + spread)
    w = centroid_weight
    return Drift(w * centroid_shift + (1.0 - w) * score_shift, centroid_shift, score_shift)


class RunningStats:
    """Exponentially decayed statistics of one stream. Thread-safe; `add` is O(dim)."""

    def __init__(self, half_life: float, low_score_threshold: float) -> None:
        self._decay = 0.5 ** (1.0 / half_life)
        self._low = low_score_threshold
        self._lock = threading.Lock()
        self._unit_sum: np.ndarray | None = None
        self.samples = 0
        self._reset()

    def _reset(self) -> None:
        self._weight = 0.0
        self._norm = [0.0, 0.0]  # decayed sums of the norms and of their squares
        self._scored = 0.0  # decayed count of samples with a best score
        self._score = [0.0, 0.0]
        self._low_count = 0.0

    def add(self, vector: Vector, best_score: float | None = None) -> bool:
        """Count one vector (and its query's best score). False when it was not counted (zero or
        non-finite norm)."""
        v = np.asarray(vector, dtype=np.float64).ravel()
        norm = float(np.sqrt(np.dot(v, v)))
        if not math.isfinite(norm) or norm == 0.0:
            return False
        d = self._decay
        with self._lock:
            if self._unit_sum is None or self._unit_sum.shape != v.shape:
                self._unit_sum = np.zeros_like(v)  # a new dimension starts the statistics over
                self._reset()
            self._unit_sum *= d
            self._unit_sum += v / norm
            self.samples += 1
            self._weight = self._weight * d + 1.0
            self._norm[0] = self._norm[0] * d + norm
            self._norm[1] = self._norm[1] * d + norm * norm
            # Decay the score sums on every sample, so both share one time base.
            self._scored *= d
            self._score[0] *= d
            self._score[1] *= d
            self._low_count *= d
            if best_score is not None and math.isfinite(best_score):
                self._scored += 1.0
                self._score[0] += best_score
                self._score[1] += best_score * best_score
                self._low_count += 1.0 if best_score < self._low else 0.0
        return True

    def summary(self) -> Summary:
        with self._lock:
            unit_sum = None if self._unit_sum is None else self._unit_sum.copy()
            samples, weight = self.samples, self._weight
            norm, scored, score, low = list(self._norm), self._scored, list(self._score), self._low_count
        if unit_sum is None or weight <= 0:
            return Summary(0, 0.0, [], 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        length = float(np.linalg.norm(unit_sum))
        centroid = (unit_sum / length).tolist() if length > 0 else []
        norm_mean = norm[0] / weight
        score_mean = score[0] / scored if scored > 0 else 0.0
        return Summary(
            samples=samples,
            weight=weight,
            centroid=centroid,
            mean_cosine=length / weight,
            norm_mean=norm_mean,
            norm_std=_std(norm[1] / weight, norm_mean),
            scored=scored,
            score_mean=score_mean,
            score_std=_std(score[1] / scored, score_mean) if scored > 0 else 0.0,
            low_score_share=low / scored if scored > 0 else 0.0,
        )


def _std(mean_sq: float, mean: float) -> float:
    return math.sqrt(max(0.0, mean_sq - mean * mean))


@dataclass
class Reference:
    taken_at: float  # unix seconds
    streams: dict[str, Summary]


class _Key:
    """The running streams and the reference of one (tenant, model version)."""

    def __init__(self, cfg: DriftConfig) -> None:
        self.streams: dict[Stream, RunningStats] = {
            s: RunningStats(cfg.half_life, cfg.low_score_threshold) for s in STREAMS
        }
        self.reference: Reference | None = None
        self.lock = threading.Lock()  # guards `reference`


@dataclass(frozen=True)
class StreamReport:
    """One stream as the collector and the RPC report it."""

    tenant: str
    model: ModelRef
    stream: Stream
    current: Summary
    drift: Drift | None  # None until the stream and its reference both have samples
    reference_taken_at: float | None


class DriftMonitor:
    def __init__(self, cfg: DriftConfig) -> None:
        self.cfg = cfg
        self._keys: LRUCache[tuple[str, str, str], _Key] = LRUCache(cfg.max_keys)
        self._keys_lock = threading.Lock()
        _COLLECTOR.monitors.add(self)

    # ------------------------------------------------------------------------------------------
    # Hooks (hot path)

    def observe_image(self, tenant: str, model: ModelRef | None, vector: Vector) -> None:
        """An ingested image's primary vector, just encoded."""
        self._observe(tenant, model, "image", vector, None)

    def observe_query(
        self, tenant: str, model: ModelRef | None, vector: Vector, best_score: float | None
    ) -> None:
        """A search's primary query vector and the best raw cosine its first stage found (0 when it
        found nothing; None when unknown)."""
        if best_score is not None:
            ref = model or ModelRef()
            BEST_SCORE.labels(tenant, ref.name, ref.version).observe(best_score)
        self._observe(tenant, model, "query", vector, best_score)

    def _observe(
        self, tenant: str, model: ModelRef | None, stream: Stream, vector: Vector, best: float | None
    ) -> None:
        ref = model or ModelRef()
        key = self._key(tenant, ref)
        stats = key.streams[stream]
        if not stats.add(vector, best):
            return
        reference = key.reference
        if stats.samples >= self.cfg.min_samples and (reference is None or stream not in reference.streams):
            # Stands in for the activation-time reference of a model nobody activated explicitly.
            self._complete_reference(tenant, ref, key, stream)

    def _complete_reference(self, tenant: str, model: ModelRef, key: _Key, stream: Stream) -> None:
        """Add `stream`'s statistics to a reference that lacks them (made when there is none)."""
        with key.lock:
            old = key.reference
            if old is not None and stream in old.streams:
                return  # another thread completed it
            streams = dict(old.streams) if old is not None else {}
            streams[stream] = key.streams[stream].summary()
            key.reference = reference = Reference(old.taken_at if old else time.time(), streams)
        self._store(tenant, model, reference)
        log.info(
            "drift reference started", tenant=tenant, model=model.name, version=model.version, stream=stream
        )

    def _key(self, tenant: str, model: ModelRef) -> _Key:
        k = (tenant, model.name, model.version)
        with self._keys_lock:
            key = self._keys.get(k)
            if key is not None:
                return key
            key = _Key(self.cfg)
            key.reference = self._load(tenant, model)  # once per key: a small file
            self._keys[k] = key
        return key

    # ------------------------------------------------------------------------------------------
    # References

    def take_reference(self, tenant: str, model: ModelRef | None = None) -> list[StreamReport]:
        """Snapshot the running statistics as the reference of `tenant` for `model` (every model
        version with statistics when None). Returns each stream's report just before the snapshot."""
        with self._keys_lock:
            picked = [
                (ModelRef(k[1], k[2]), key)
                for k, key in list(self._keys.items())
                if k[0] == tenant and (model is None or (k[1], k[2]) == (model.name, model.version))
            ]
        reports: list[StreamReport] = []
        for ref, key in picked:
            reports += self._reports(tenant, ref, key)
            summaries = {s: stats.summary() for s, stats in key.streams.items()}
            reference = Reference(time.time(), {s: v for s, v in summaries.items() if v.samples})
            with key.lock:
                key.reference = reference
            self._store(tenant, ref, reference)
            log.info("drift reference taken", tenant=tenant, model=ref.name, version=ref.version)
        return reports

    def reports(self) -> Iterator[StreamReport]:
        with self._keys_lock:
            items = list(self._keys.items())
        for (tenant, name, version), key in items:
            yield from self._reports(tenant, ModelRef(name, version), key)

    def _reports(self, tenant: str, model: ModelRef, key: _Key) -> list[StreamReport]:
        with key.lock:
            reference = key.reference
        out = []
        for stream, stats in key.streams.items():
            current = stats.summary()
            if not current.samples:
                continue
            base = reference.streams.get(stream) if reference is not None else None
            drift = None
            if base is not None and base.centroid and current.centroid:
                drift = drift_score(current, base, self.cfg.centroid_weight)
            taken = reference.taken_at if reference is not None else None
            out.append(StreamReport(tenant, model, stream, current, drift, taken))
        return out

    def _path(self, tenant: str, model: ModelRef) -> Path | None:
        if self.cfg.reference_dir is None:
            return None
        # Quoted: tenant and model names are caller-chosen strings, never path parts.
        name = quote(f"{model.name}@{model.version}", safe="") + ".json"
        return self.cfg.reference_dir / quote(tenant, safe="") / name

    def _store(self, tenant: str, model: ModelRef, reference: Reference) -> None:
        path = self._path(tenant, model)
        if path is None:
            return
        doc = {
            "format": _REFERENCE_FORMAT,
            "tenant": tenant,
            "model": {"name": model.name, "version": model.version},
            "taken_at": dt.datetime.fromtimestamp(reference.taken_at, dt.UTC).isoformat(),
            "streams": {s: asdict(v) for s, v in reference.streams.items()},
        }
        write_json_durably(path, doc)  # readers see the old or the new reference, never half of one

    def _load(self, tenant: str, model: ModelRef) -> Reference | None:
        path = self._path(tenant, model)
        if path is None or not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != _REFERENCE_FORMAT:
                raise ValueError(f"unknown format {doc.get('format')!r}")
            taken = dt.datetime.fromisoformat(doc["taken_at"]).timestamp()
            streams = {s: Summary.from_json(v) for s, v in doc["streams"].items() if s in STREAMS}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged reference is replaced by the next one taken; until then there is no score.
            log.warning("drift reference unreadable; ignored", path=str(path), detail=str(exc))
            return None
        return Reference(taken, streams)


class _DriftCollector(Collector):
    """The gateway_drift_* gauges of every live monitor, computed at scrape time."""

    def __init__(self) -> None:
        self.monitors: weakref.WeakSet[DriftMonitor] = weakref.WeakSet()

    def collect(self) -> Iterable[Metric]:
        g = {
            name: GaugeMetricFamily(f"gateway_drift_{name}", doc, labels=_LABELS)
            for name, doc in (
                (
                    "score",
                    "Drift score against the reference (0 = as at the reference; see docs/OPERATIONS.md).",
                ),
                ("centroid_shift", "(1 - cosine between the running and the reference centroid) / 2."),
                (
                    "best_score_shift",
                    "Shift of the mean best score in reference spreads (0-1; query stream).",
                ),
                ("mean_cosine_to_centroid", "Mean cosine of the recent vectors to their running centroid."),
                ("vector_norm_mean", "Mean norm of the recent vectors (before normalisation)."),
                ("vector_norm_stddev", "Standard deviation of the recent vectors' norms."),
                ("best_score_mean", "Mean best raw cosine of recent searches (query stream)."),
                ("low_score_share", "Share of recent searches whose best score is below the threshold."),
                ("reference_timestamp_seconds", "When the reference in use was taken (unix seconds)."),
            )
        }
        samples = CounterMetricFamily(
            "gateway_drift_samples", "Vectors counted by the drift statistics.", labels=_LABELS
        )
        for monitor in list(self.monitors):
            for r in monitor.reports():
                labels = [r.tenant, r.model.name, r.model.version, r.stream]
                c = r.current
                samples.add_metric(labels, c.samples)
                g["mean_cosine_to_centroid"].add_metric(labels, c.mean_cosine)
                g["vector_norm_mean"].add_metric(labels, c.norm_mean)
                g["vector_norm_stddev"].add_metric(labels, c.norm_std)
                if c.scored > 0:
                    g["best_score_mean"].add_metric(labels, c.score_mean)
                    g["low_score_share"].add_metric(labels, c.low_score_share)
                if r.reference_taken_at is not None:
                    g["reference_timestamp_seconds"].add_metric(labels, r.reference_taken_at)
                if r.drift is not None:
                    g["score"].add_metric(labels, r.drift.score)
                    g["centroid_shift"].add_metric(labels, r.drift.centroid_shift)
                    if r.drift.score_shift is not None:
                        g["best_score_shift"].add_metric(labels, r.drift.score_shift)
        yield samples
        yield from g.values()


_COLLECTOR = _DriftCollector()
REGISTRY.register(_COLLECTOR)
