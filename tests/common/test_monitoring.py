"""deploy/: the Prometheus config and alert rules pass promtool (check config, which checks the rule
files, and the rules' unit tests in rules_test.yml), and every metric the alerts and the Grafana
dashboard query is one the services export.

promtool is installed by scripts/install_tools.sh (pinned `go install`, cached): without Go the promtool
tests skip, except in CI, where they fail.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy/prometheus"
DASHBOARD = REPO / "deploy/grafana/imagesearch.json"
INSTALL = REPO / "scripts/install_tools.sh"

# Modules whose import registers the services' metrics.
METRIC_MODULES = (
    "services.common.metrics",
    "services.encoder.core",
    "services.search.metrics",
    "services.gateway.drift",
    "services.gateway.ratelimit",
    "services.gateway.search_flow",
    "services.gateway.feedback_flow",
    "services.gateway.reindex",
    "services.gateway.shadow",
)
_PREFIXES = ("grpc_", "gateway_", "search_", "encoder_", "backend_")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@pytest.fixture(scope="module")
def promtool() -> Path:
    binary = Path(
        subprocess.run([INSTALL, "--print-bin"], capture_output=True, text=True, check=True).stdout.strip()
    )
    binary /= "promtool"
    if not binary.exists():
        if shutil.which("go") is None:
            if os.environ.get("CI"):
                pytest.fail("promtool is needed in CI: install Go so scripts/install_tools.sh can build it")
            pytest.skip("promtool not installed and no Go to build it (scripts/install_tools.sh promtool)")
        subprocess.run([INSTALL, "promtool"], check=True, timeout=1800)
    return binary


def _run(promtool: Path, *args: str) -> str:
    proc = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_config_and_rules_pass_promtool_check(promtool: Path) -> None:
    out = _run(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS: 10 rules found" in out  # check config checks the rule files it names
    _run(promtool, "check", "rules", "alerts.yml")


def test_alert_rules_unit_tests_pass(promtool: Path) -> None:
    out = _run(promtool, "test", "rules", "rules_test.yml")
    assert "SUCCESS" in out


def test_every_alert_has_a_test_and_a_runbook_section() -> None:
    rules = [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    tests = (PROMETHEUS / "rules_test.yml").read_text()
    operations = (REPO / "docs/OPERATIONS.md").read_text()
    for rule in rules:
        name = rule["alert"]
        assert f"alertname: {name}" in tests, f"{name} has no promtool unit test"
        assert rule["annotations"]["runbook"] == f"docs/OPERATIONS.md#{name.lower()}"
        assert f"### {name}" in operations, f"docs/OPERATIONS.md does not explain {name}"


def _exported_metric_names() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names: set[str] = set()
    for family in REGISTRY.collect():
        base = family.name
        if family.type == "counter":
            names.add(f"{base}_total")
        elif family.type == "histogram":
            names.update(f"{base}{s}" for s in ("_bucket", "_sum", "_count"))
        else:
            names.add(base)
    return names


def _queried_metrics(expressions: list[str]) -> set[str]:
    """Metric names in PromQL expressions: label values, matchers and grouping labels removed first."""
    names = set()
    for expr in expressions:
        expr = re.sub(r'"[^"]*"', '""', expr)
        expr = re.sub(r"\{[^}]*\}", "", expr)
        expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
        names.update(t for t in _IDENT.findall(expr) if t.startswith(_PREFIXES))
    return names


def test_alerts_and_dashboard_query_only_exported_metrics() -> None:
    exported = _exported_metric_names()
    rules = [r for g in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs, "the dashboard has no queries"
    assert _queried_metrics([r["expr"] for r in rules]) - exported == set()
    assert _queried_metrics(exprs) - exported == set()
    shown = _queried_metrics(exprs)
    for needed in (
        "grpc_server_handling_seconds_bucket",
        "search_cache_requests_total",
        "gateway_degraded_searches_total",
        "gateway_drift_score",
        "gateway_searches_served_total",
        "gateway_feedback_events_total",
    ):
        assert needed in shown, f"the dashboard does not show {needed}"
