"""The evaluation's pure parts: metrics, judgement files, configuration specs, the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from services.evaluation.command import parse_config
from services.evaluation.domain import EvalConfig, Judgement, QueryRun
from services.evaluation.judgements import JudgementError, load_judgements
from services.evaluation.metrics import hit_at, ndcg_at, precision_at, recall_at, reciprocal_rank, summarise
from services.evaluation.report import markdown, score


def test_metrics_of_one_query() -> None:
    relevant = {"a": 2, "b": 1}
    ranked = ["x", "a", "y", "b"]
    assert recall_at(ranked, relevant, 1) == 0.0 and recall_at(ranked, relevant, 4) == 1.0
    assert hit_at(ranked, relevant, 1) == 0.0 and hit_at(ranked, relevant, 2) == 1.0
    assert precision_at(ranked, relevant, 4) == 0.5
    assert precision_at(["a"], relevant, 10) == 0.1  # k positions even when fewer came back
    assert reciprocal_rank(ranked, relevant) == 0.5 and reciprocal_rank([], relevant) == 0.0
    ideal = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranked, relevant) == pytest.approx((3 / math.log2(3) + 1 / math.log2(5)) / ideal)
    assert ndcg_at(["a", "b"], relevant) == pytest.approx(1.0)


def test_summary_counts_failed_queries_as_misses_and_reports_latency() -> None:
    runs = [
        QueryRun("q1", "f", "c", ("a",), 10.0),
        QueryRun("q2", "f", "c", (), 30.0, error="UNAVAILABLE: down"),
    ]
    out = summarise(runs, {"q1": {"a": 1}, "q2": {"a": 1}})
    assert out["hit@1"] == 0.5 and out["mrr"] == 0.5
    assert out["latency_p50_ms"] == 10.0  # failed searches are left out of latency


def test_judgement_files(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(
        "# comment\n"
        + json.dumps(
            {"id": "q1", "family": "exact", "text": "shark", "relevant": {"a": 2}, "split": "heldout"}
        )
        + "\n"
        + json.dumps({"image": "img/x.jpg", "relevant": ["a", "b"]})
        + "\n"
    )
    first, second = load_judgements(path)
    assert first == Judgement("q1", "exact", "shark", None, {"a": 2}, "heldout")
    assert second.query_id == "j:3" and second.family == "all" and second.relevant == {"a": 1, "b": 1}
    assert second.image == tmp_path / "img/x.jpg"
    assert load_judgements(path, Path("/data"))[1].image == Path("/data/img/x.jpg")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "j.jsonl:1: not JSON"),
        ('{"text": "x"}', "`relevant` must be a non-empty object"),
        ('{"relevant": {"a": 1}}', "give a `text`, an `image`, or both"),
        ('{"text": "x", "relevant": {"a": 0}}', "grade of 'a' must be an integer >= 1"),
        (
            '{"id": "d", "text": "x", "relevant": ["a"]}\n{"id": "d", "text": "y", "relevant": ["a"]}',
            "appears twice",
        ),
    ],
)
def test_bad_judgement_files_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(JudgementError, match=message.replace("(", r"\(")):
        load_judgements(path)


def test_config_specs() -> None:
    assert parse_config("default") == EvalConfig("default")
    assert parse_config("old:alpha=0.75,fusion=relative_score,rerank=off") == EvalConfig(
        "old", alpha=0.75, fusion="relative_score", rerank=False
    )
    for bad, why in [
        ("x:alpha=2", "alpha must be in"),
        ("x:fusion=max", "fusion must be one of"),
        ("x:depth=3", "unknown key"),
        (":alpha=0.5", "needs a name"),
        ("x:alpha", "not key=value"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_config(bad)


def test_report_table_per_family_and_config() -> None:
    judgements = [Judgement("q1", "exact", "a", None, {"a": 1}), Judgement("q2", "para", "b", None, {"b": 1})]
    runs = [
        QueryRun("q1", "exact", "default", ("a",), 5.0),
        QueryRun("q2", "para", "default", ("x", "b"), 7.0),
        QueryRun("q1", "exact", "keyword-only", ("x",), 4.0),
        QueryRun("q2", "para", "keyword-only", (), 4.0, error="INVALID_ARGUMENT: no"),
    ]
    scores = score(judgements, runs)
    assert [(s.config, s.family) for s in scores] == [
        ("default", "exact"),
        ("default", "para"),
        ("keyword-only", "exact"),
        ("keyword-only", "para"),
    ]
    table = markdown(scores).splitlines()
    assert table[0].startswith("| family | config | queries | hit@1 |")
    assert "| exact | default | 1 | 1.000 |" in table[2]
    assert any("| para | keyword-only | 1 (1 failed) | 0.000 |" in row for row in table)
