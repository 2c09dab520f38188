"""The evaluation's report: per family and configuration, a markdown table, JSON, and a plot."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.evaluation.domain import EvalConfig, FamilyScores, Judgement, QueryRun
from services.evaluation.metrics import summarise

# The columns of the markdown table (every metric is in the JSON).
TABLE_METRICS = ("hit@1", "recall@10", "precision@10", "ndcg@10", "mrr", "latency_p50_ms")


def score(judgements: Sequence[Judgement], runs: Sequence[QueryRun]) -> list[FamilyScores]:
    """Mean metrics per (configuration, family), configurations in run order, families sorted."""
    relevant = {j.query_id: j.relevant for j in judgements}
    groups: dict[tuple[str, str], list[QueryRun]] = defaultdict(list)
    for r in runs:
        groups[(r.config, r.family)].append(r)
    configs = list(dict.fromkeys(r.config for r in runs))
    families = sorted({r.family for r in runs})
    out = []
    for cfg in configs:
        for fam in families:
            rs = groups.get((cfg, fam), [])
            if rs:
                errors = sum(1 for r in rs if r.error)
                out.append(FamilyScores(cfg, fam, len(rs), summarise(rs, relevant), errors))
    return out


def markdown(scores: Sequence[FamilyScores]) -> str:
    head = "| family | config | queries | " + " | ".join(TABLE_METRICS) + " |"
    rule = "|" + "---|" * (3 + len(TABLE_METRICS))
    rows = [head, rule]
    for s in sorted(scores, key=lambda s: s.family):
        cells = [f"{s.metrics.get(m, float('nan')):.3f}" for m in TABLE_METRICS]
        errors = f" ({s.errors} failed)" if s.errors else ""
        rows.append(f"| {s.family} | {s.config} | {s.queries}{errors} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def as_json(
    scores: Sequence[FamilyScores], configs: Sequence[EvalConfig], meta: dict[str, Any]
) -> dict[str, Any]:
    return {
        **meta,
        "configs": [vars(c) for c in configs],
        "results": [
            {"config": s.config, "family": s.family, "queries": s.queries, "errors": s.errors, **s.metrics}
            for s in scores
        ],
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def plot(scores: Sequence[FamilyScores], path: Path, metric: str = "ndcg@10") -> None:
    """Grouped bars: one group per family, one bar per configuration (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({s.family for s in scores})
    configs = list(dict.fromkeys(s.config for s in scores))
    value = {(s.config, s.family): s.metrics.get(metric, 0.0) for s in scores}
    width = 0.8 / max(1, len(configs))
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(families), 4))
    for i, cfg in enumerate(configs):
        xs = [f + i * width for f in range(len(families))]
        ax.bar(xs, [value.get((cfg, fam), 0.0) for fam in families], width, label=cfg)
    ax.set_xticks([f + width * (len(configs) - 1) / 2 for f in range(len(families))], families)
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
