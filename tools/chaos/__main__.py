"""`python -m tools.chaos --component weaviate --runs 5`: a table per component, JSON in bench/results/."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tools.chaos.harness import COMPONENTS, RunConfig, real_stack, run_once

RESULTS = Path(__file__).resolve().parents[2] / "bench/results"
COLUMNS = [
    ("run", 3), ("acked", 5), ("stored", 6), ("findable", 8), ("lost", 4), ("dup", 3), ("failed", 6),
    ("failed+stored", 13), ("uncertain", 9), ("unc.bad", 7), ("unanswered", 10), ("recovery_s", 10),
    ("outage codes", 30), ("fail p99 ms", 11),
]  # fmt: skip


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def row(i: int, r: dict[str, Any]) -> list[str]:
    out = r["outage_searches"]
    codes = ",".join(f"{k}:{v}" for k, v in sorted(out["codes"].items()))
    if out["degraded"]:
        codes += f" (degraded {out['degraded']})"
    return [
        str(i), str(r["acknowledged"]), str(r["stored"]), str(r["findable"]), str(r["lost"]),
        str(r["duplicated"]), str(r["failed"]), str(r["failed_but_stored"]), str(r["uncertain"]),
        str(r["uncertain_resend_not_stored_once"]), str(r["unanswered"]), _fmt(r["recovery_s"]), codes,
        _fmt(out["failing_p99_ms"]),
    ]  # fmt: skip


def table(component: str, runs: list[dict[str, Any]]) -> str:
    widths = [max(w, len(name)) for name, w in COLUMNS]
    rows = [row(i + 1, r) for i, r in enumerate(runs)]
    for cells in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
    line = "  ".join(name.ljust(w) for (name, _), w in zip(COLUMNS, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) for cells in rows]
    return "\n".join([f"== kill -9 {component} ==", line, *body])


SUMMED = ("acknowledged", "stored", "findable", "lost", "duplicated", "failed")


def markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    """One line per component, summed (counts) or worst-of (times) over its runs."""
    head = (
        "| killed | runs | acknowledged | stored | findable | lost | duplicated | FAILED (resent) | "
        "FAILED but stored | UNCERTAIN | recovery s (max) | searches during outage | failing p99 ms (max) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, runs in results.items():
        codes: dict[str, int] = {}
        degraded = 0
        for r in runs:
            degraded += r["outage_searches"]["degraded"]
            for k, v in r["outage_searches"]["codes"].items():
                codes[k] = codes.get(k, 0) + v
        recovery = [r["recovery_s"] for r in runs]
        p99 = [r["outage_searches"]["failing_p99_ms"] for r in runs if r["outage_searches"]["failing_p99_ms"]]
        searched = ", ".join(f"{k} {v}" for k, v in sorted(codes.items())) + (
            f" ({degraded} degraded)" if degraded else ""
        )
        cells = [
            name, str(len(runs)), *(str(sum(r[k] for r in runs)) for k in SUMMED),
            str(sum(r["failed_but_stored"] for r in runs)), str(sum(r["uncertain"] for r in runs)),
            "-" if None in recovery else f"{max(recovery):.2f}", searched, f"{max(p99):.0f}" if p99 else "-",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__)
    parser.add_argument(
        "--component", default="all", help=f"one or more of {','.join(COMPONENTS)} (comma-separated), or all"
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per component")
    parser.add_argument("--items", type=int, default=150, help="images streamed per run")
    parser.add_argument("--outage-s", type=float, default=3.0, help="seconds the component stays dead")
    parser.add_argument("--run-deadline-s", type=float, default=240.0, help="bound of one run")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON file (default bench/results/chaos-*.json)"
    )
    parser.add_argument(
        "--summarize", type=Path, default=None, help="print a Markdown summary of a results file"
    )
    args = parser.parse_args(argv)
    if args.summarize is not None:
        print(markdown(json.loads(args.summarize.read_text())))
        return 0
    names = list(COMPONENTS) if args.component == "all" else [c.strip() for c in args.component.split(",")]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        parser.error(f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}")
    out = args.out or RESULTS / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict[str, Any]]] = {}
    bad = 0
    with real_stack() as (stack, info):
        for name in names:
            results[name] = []
            for run in range(args.runs):
                config = RunConfig(
                    component=name, items=args.items, outage_s=args.outage_s,
                    run_deadline_s=args.run_deadline_s, seed=run + 1,
                )  # fmt: skip
                result = run_once(stack, info, config)
                results[name].append(result)
                out.write_text(json.dumps(results, indent=1, default=str))
                recovery = result["recovery_s"]
                bad += bool(
                    result["lost"] or result["duplicated"] or result["failed_but_stored"]
                    or result["uncertain_resend_not_stored_once"] or recovery is None or recovery > 10
                )  # fmt: skip
                brief = {k: result[k] for k in ("acknowledged", "lost", "duplicated", "recovery_s")}
                print(f"{name} run {run + 1}: {json.dumps(brief)}", flush=True)
            print(table(name, results[name]), flush=True)
    print(f"results: {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
