"""The evaluation's types: judged queries, the configurations compared, and what one run measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FUSIONS = ("adaptive", "relative_score", "ranked")


@dataclass(frozen=True)
class Judgement:
    """One judged query: text and/or an example image, and the relevant asset ids with grades (> 0)."""

    query_id: str
    family: str
    text: str = ""
    image: Path | None = None
    relevant: dict[str, int] = field(default_factory=dict)
    split: str = ""


@dataclass(frozen=True)
class EvalConfig:
    """One configuration of the gateway's search: unset fields keep the server's defaults."""

    name: str
    alpha: float | None = None
    fusion: str | None = None  # one of FUSIONS
    rerank: bool = True
    text_weight: float | None = None
    mmr_lambda: float | None = None


@dataclass(frozen=True)
class QueryRun:
    """What one configuration returned for one query."""

    query_id: str
    family: str
    config: str
    ranked: tuple[str, ...]
    latency_ms: float
    error: str = ""


@dataclass
class FamilyScores:
    """Mean metrics of one configuration over one family's queries."""

    config: str
    family: str
    queries: int
    metrics: dict[str, float]
    errors: int = 0


# Baselines every comparison can include (`--baselines`): each leg alone and the previous default.
BASELINES = (
    EvalConfig("keyword-only", alpha=0.0, fusion="relative_score"),
    EvalConfig("vector-only", alpha=1.0, fusion="relative_score"),
    EvalConfig("relative-0.75", alpha=0.75, fusion="relative_score"),
)
DEFAULT_CONFIG = EvalConfig("default")
