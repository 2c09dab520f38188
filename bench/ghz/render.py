#!/usr/bin/env python3
"""Render a ghz suite run (bench/ghz/run.py's summary.json) as a markdown table and PNG plots.

    python -m bench.ghz.render bench/results/ghz-<time>            # writes results.md (+ PNGs)
    python -m bench.ghz.render OUT --no-plots                       # markdown only

Writes into the run's directory:
    results.md       run facts, one table row per scenario, skipped/failed scenarios with the reason
    latency.png      p50 / p95 / p99 per scenario (log scale)
    throughput.png   requests/s per scenario (log scale), items/s for batched calls in the label
    statuses.png     share of each status code per scenario (the error distribution)

The plots need matplotlib (not a dependency of the suite): run this script with an interpreter that has
it, e.g. a scratch venv with `pip install matplotlib==3.10.*`. Without it, only results.md is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

STATUS_COLOURS = {
    "OK": "#4c956c",
    "INVALID_ARGUMENT": "#90be6d",
    "NOT_FOUND": "#f9c74f",
    "UNAUTHENTICATED": "#f8961e",
    "PERMISSION_DENIED": "#f3722c",
    "RESOURCE_EXHAUSTED": "#b5179e",
    "DEADLINE_EXCEEDED": "#7209b7",
    "UNAVAILABLE": "#d62828",
    "UNIMPLEMENTED": "#6c757d",
    "INTERNAL": "#000000",
}


def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def loadavg(values: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in values)


def measured(summary: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in summary["scenarios"] if "rps" in s]


def latency_of(s: dict[str, Any]) -> dict[str, Any]:
    """Latency over the expected-status responses; over all of them when none had the expected status."""
    return s["latency_ms"] if s["latency_ms"]["n"] else s["latency_all_ms"]


def markdown(summary: dict[str, Any], plots: list[str]) -> str:
    host = summary["host"]
    lines = [
        f"# ghz load suite: run {summary['run_id']}",
        "",
        f"- started {summary['started_utc']}, {summary['wall_s']} s in all, profile `{summary['profile']}`, "
        f"commit `{summary['git_commit']}`",
        f"- load generator: {summary['ghz']} on {summary['ghz_cpus']} core(s)"
        + (f" pinned to core(s) {summary['ghz_cpu_list']}" if summary.get("ghz_cpu_list") else "")
        + f"; host {host['machine']} with {host['cpus']} cores, load average (1/5/15 min) "
        + (f"at the start {loadavg(host['loadavg_start'])}, " if host.get("loadavg_start") else "")
        + f"at the end {loadavg(host['loadavg_end'])}",
        f"- targets: {', '.join(f'{k} {v}' for k, v in summary['targets'].items()) or 'none'}",
        f"- data: {summary['data']['images']} real images, {summary['data']['queries']} query texts "
        f"({summary['data']['manifest']}); vectors: "
        + (
            "none"
            if summary["vectors"] is None
            else f"{summary['vectors']['origin']} ({summary['vectors']['model']['name']}, "
            f"dim {summary['vectors']['dim']})"
        ),
    ]
    if summary.get("note"):
        lines.append(f"- note: {summary['note']}")
    per_cpu = any(s.get("calls_per_server_cpu_s") for s in measured(summary))
    lines += [
        "",
        "Latency is over the responses with the scenario's expected status (over all responses, marked *,"
        " when none had it). `x base p50` / `x base rps` compare with the scenario's `baseline` (a health"
        " check measured in this run)."
        + (
            " `calls/CPU-s`: calls per CPU-second of the watched server processes "
            f"({', '.join(summary.get('watched_pids', {}))}), which other load on the machine distorts"
            " far less than rps."
            if per_cpu
            else ""
        ),
        "",
        "| scenario | calls | rps | items/s | p50 ms | p95 ms | p99 ms | mean ms | baseline | x base p50 "
        "| x base rps " + ("| calls/CPU-s " if per_cpu else "") + "| unexpected | statuses | stop |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"
        + ("---:|" if per_cpu else "")
        + "---:|---|---|",
    ]
    for s in measured(summary):
        lat = latency_of(s)
        star = "" if s["latency_ms"]["n"] else "*"
        items = s.get("items_per_call")
        statuses = ", ".join(f"{k} {v}" for k, v in s["status_distribution"].items())
        lines.append(
            f"| `{s['name']}` | {s['count']} | {fmt(s['rps'])} | {fmt(s['rps'] * items) if items else ''} "
            f"| {fmt(lat['p50'], 2)}{star} | {fmt(lat['p95'], 2)}{star} | {fmt(lat['p99'], 2)}{star} "
            f"| {fmt(lat['mean'], 2)}{star} | {s.get('baseline', '')} | {fmt(s.get('p50_vs_baseline'), 2)} "
            f"| {fmt(s.get('rps_vs_baseline'), 3)} "
            + (f"| {fmt(s.get('calls_per_server_cpu_s'), 0)} " if per_cpu else "")
            + f"| {fmt(100 * (s['unexpected_ratio'] or 0), 1)} % "
            f"| {statuses} | {s.get('stopped_by') or ''} |"
        )
    notes = [s for s in summary["scenarios"] if "rps" not in s]
    if notes:
        lines += ["", "Not measured:", ""]
        lines += [f"- `{s['name']}`: {s.get('skipped') or s.get('failed')}" for s in notes]
    errors = [s for s in measured(summary) if s["error_distribution"]]
    if errors:
        lines += ["", "Error messages (most frequent first):", ""]
        for s in errors:
            expected = " (the expected status)" if not s["unexpected"] else ""
            for message, count in s["error_distribution"].items():
                lines.append(f"- `{s['name']}` x{count}{expected}: {message[:200]}")
    extra = {k: s["items_stored"] for s in measured(summary) for k in [s["name"]] if "items_stored" in s}
    if extra:
        lines += ["", "Items stored by write scenarios (verified with GetAsset):", ""]
        lines += [f"- `{k}`: {v}" for k, v in extra.items()]
    if summary.get("cleanup"):
        lines += ["", f"Cleanup after the run: {summary['cleanup']}"]
    if plots:
        lines += [""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = measured(summary)
    if not rows:
        return []
    names = [s["name"] for s in rows]
    height = 0.6 + 0.32 * len(rows)
    written = []

    fig, ax = plt.subplots(figsize=(10, height))
    ys = range(len(rows))
    for offset, (pct, colour) in enumerate((("p50", "#277da1"), ("p95", "#f9844a"), ("p99", "#f94144"))):
        values = [latency_of(s)[pct] or 0 for s in rows]
        ax.barh([y + (offset - 1) * 0.27 for y in ys], values, height=0.27, label=pct, color=colour)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_title(f"ghz latency percentiles, run {summary['run_id']}")
    ax.legend(loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    written.append("latency.png")

    fig, ax = plt.subplots(figsize=(10, height))
    rps = [s["rps"] for s in rows]
    ax.barh(list(ys), rps, color="#43aa8b")
    for y, s in zip(ys, rows, strict=True):
        label = f"{s['rps']:,.1f}"
        if s.get("items_per_call"):
            label += f"  ({s['rps'] * s['items_per_call']:,.1f} items/s)"
        ax.text(s["rps"], y, " " + label, va="center", fontsize=8)
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("requests per second (log scale)")
    ax.set_title(f"ghz throughput, run {summary['run_id']}")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    written.append("throughput.png")

    fig, ax = plt.subplots(figsize=(10, height))
    codes = sorted({c for s in rows for c in s["status_distribution"]}, key=lambda c: (c != "OK", c))
    left = [0.0] * len(rows)
    for code in codes:
        shares = [s["status_distribution"].get(code, 0) / max(1, s["count"]) for s in rows]
        ax.barh(list(ys), shares, left=left, label=code, color=STATUS_COLOURS.get(code, "#adb5bd"))
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of responses")
    ax.set_title(f"status codes per scenario, run {summary['run_id']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "statuses.png", dpi=110)
    plt.close(fig)
    written.append("statuses.png")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path, help="directory holding summary.json")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    summary = json.loads((args.run_dir / "summary.json").read_text())
    plots: list[str] = []
    if not args.no_plots:
        try:
            plots = plot(summary, args.run_dir)
        except ImportError:
            print(
                "matplotlib is not importable here: writing results.md only "
                "(run with an interpreter that has matplotlib==3.10.* for the PNGs)",
                file=sys.stderr,
            )
    (args.run_dir / "results.md").write_text(markdown(summary, plots))
    print(f"wrote {args.run_dir / 'results.md'}" + (f" and {', '.join(plots)}" if plots else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
