"""Online evaluation: per-arm click-through rate and MRR of clicks, read from a gateway's /metrics.

    online_report("http://127.0.0.1:9470/metrics") -> OnlineReport (.markdown(), .as_dict())

The figures come from the gateway's metrics (services/gateway/feedback_flow.py):
- CTR and MRR of clicks from the gauges that mirror the feedback store's durable all-time totals, so
  one replica's endpoint reports every replica's feedback (from its last read of the store);
- searches served, searches clicked, clicks and events per kind from that process's counters, since it
  started (for rates across replicas, query Prometheus: the PromQL is in docs/GATEWAY.md).
`imagesearch eval-online` prints the markdown; `imagesearch eval --online` calls `online_report`.
"""

from __future__ import annotations

import urllib.request
from dataclasses import asdict, dataclass, field

from prometheus_client.parser import text_string_to_metric_families

DEFAULT_METRICS_URL = "http://127.0.0.1:9470/metrics"


@dataclass
class ArmFigures:
    arm: str
    click_through_rate: float = 0.0  # all time, from the store
    mrr_of_clicks: float = 0.0  # all time, from the store
    searches_served: int = 0  # this process, since it started
    searches_clicked: int = 0
    clicks: int = 0
    events: dict[str, int] = field(default_factory=dict)


@dataclass
class OnlineReport:
    source: str
    arms: list[ArmFigures]

    def arm(self, name: str) -> ArmFigures:
        for a in self.arms:
            if a.arm == name:
                return a
        return ArmFigures(name)

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "arms": [asdict(a) for a in self.arms]}

    def markdown(self) -> str:
        lines = [
            f"Online evaluation from {self.source}",
            "",
            "| arm | CTR (all time) | MRR of clicks (all time) | searches | clicked | clicks | events |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for a in self.arms:
            events = ", ".join(f"{k} {v}" for k, v in sorted(a.events.items())) or "-"
            lines.append(
                f"| {a.arm} | {a.click_through_rate:.3f} | {a.mrr_of_clicks:.3f} | {a.searches_served} "
                f"| {a.searches_clicked} | {a.clicks} | {events} |"
            )
        if not self.arms:
            lines.append("| (no searches served yet) | | | | | | |")
        lines += ["", "searches, clicked, clicks and events: the scraped process since it started."]
        return "\n".join(lines)


def parse_metrics(text: str, source: str = "") -> OnlineReport:
    """The per-arm figures of one /metrics page (Prometheus text format)."""
    arms: dict[str, ArmFigures] = {}

    def of(labels: dict[str, str]) -> ArmFigures:
        name = labels.get("arm", "")
        return arms.setdefault(name, ArmFigures(name))

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "arm" not in sample.labels:
                continue
            name, value = sample.name, sample.value
            if name == "gateway_arm_click_through_rate":
                of(sample.labels).click_through_rate = value
            elif name == "gateway_arm_mrr_of_clicks":
                of(sample.labels).mrr_of_clicks = value
            elif name == "gateway_searches_served_total":
                of(sample.labels).searches_served = int(value)
            elif name == "gateway_searches_clicked_total":
                of(sample.labels).searches_clicked = int(value)
            elif name == "gateway_feedback_events_total":
                figures = of(sample.labels)
                kind = sample.labels.get("kind", "")
                figures.events[kind] = int(value)
                if kind == "click":
                    figures.clicks = int(value)
    return OnlineReport(source, sorted(arms.values(), key=lambda a: a.arm))


def online_report(metrics_url: str = DEFAULT_METRICS_URL, timeout_s: float = 10.0) -> OnlineReport:
    """Scrape one gateway's /metrics and report per arm."""
    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as resp:
        text = resp.read().decode()
    return parse_metrics(text, metrics_url)
