"""The `imagesearch eval` journey: load judgements, run each configuration over the live gateway,
score per family, write the report (markdown to stdout or a file, JSON, plot)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc
from imagesearch.v1 import gateway_pb2_grpc

from services.evaluation.domain import BASELINES, DEFAULT_CONFIG, FUSIONS, EvalConfig, Judgement
from services.evaluation.judgements import JudgementError, load_judgements
from services.evaluation.report import as_json, markdown, plot, score, write_json
from services.evaluation.runner import Runner

_FLOAT_KNOBS = ("alpha", "text_weight", "mmr_lambda")


def parse_config(spec: str) -> EvalConfig:
    """`NAME` or `NAME:key=value,...` with keys alpha, fusion, rerank (on/off), text_weight, mmr_lambda."""
    name, _, rest = spec.partition(":")
    if not name:
        raise ValueError(f"config {spec!r} needs a name before ':'")
    fields: dict[str, object] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"config {name!r}: {item!r} is not key=value")
        if key in _FLOAT_KNOBS:
            number = float(value)
            if not 0.0 <= number <= 1.0:
                raise ValueError(f"config {name!r}: {key} must be in [0, 1], got {value}")
            fields[key] = number
        elif key == "fusion":
            if value not in FUSIONS:
                raise ValueError(f"config {name!r}: fusion must be one of {', '.join(FUSIONS)}")
            fields[key] = value
        elif key == "rerank":
            if value not in ("on", "off"):
                raise ValueError(f"config {name!r}: rerank must be on or off")
            fields[key] = value == "on"
        else:
            raise ValueError(
                f"config {name!r}: unknown key {key!r} (alpha, fusion, rerank, text_weight, mmr_lambda)"
            )
    return EvalConfig(name, **fields)  # type: ignore[arg-type]


def configs_of(args: argparse.Namespace) -> list[EvalConfig]:
    configs = [parse_config(c) for c in args.config] if args.config else [DEFAULT_CONFIG]
    if args.baselines:
        configs += [b for b in BASELINES if b.name not in {c.name for c in configs}]
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"config names must differ: {names}")
    return configs


def selected(args: argparse.Namespace) -> list[Judgement]:
    judgements: list[Judgement] = []
    for path in args.judgements:
        judgements += load_judgements(Path(path), Path(args.images_root) if args.images_root else None)
    if args.split:
        judgements = [j for j in judgements if j.split == args.split]
    if args.family:
        judgements = [j for j in judgements if j.family in set(args.family)]
    if not judgements:
        raise JudgementError("no judged query left after --split / --family")
    missing = [str(j.image) for j in judgements if j.image is not None and not j.image.is_file()]
    if missing:
        raise JudgementError(
            f"{len(missing)} query image(s) not found, e.g. {missing[0]} (see --images-root)"
        )
    return judgements


def run_eval(args: argparse.Namespace, channel: grpc.Channel, metadata: list[tuple[str, str]]) -> int:
    try:
        configs = configs_of(args)
        judgements = selected(args)
    except (ValueError, OSError) as exc:
        print(f"imagesearch eval: {exc}", file=sys.stderr)
        return 2
    runner = Runner(
        gateway_pb2_grpc.GatewayServiceStub(channel),
        metadata,
        depth=args.depth,
        concurrency=args.concurrency,
        timeout_s=args.timeout or 30.0,
    )

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % 50 == 0):
            print(
                f"\r{done}/{total} searches", end="\n" if done == total else "", file=sys.stderr, flush=True
            )

    started = time.time()
    runs = runner.run(judgements, configs, progress)
    scores = score(judgements, runs)
    table = markdown(scores)
    if args.markdown:
        Path(args.markdown).write_text(table)
    print(table, end="")
    meta = {
        "judgements": [str(p) for p in args.judgements],
        "split": args.split or "all",
        "queries": len(judgements),
        "depth": args.depth,
        "started_at": started,
        "wall_s": round(time.time() - started, 1),
    }
    if args.json:
        write_json(Path(args.json), as_json(scores, configs, meta))
    if args.plot:
        try:
            plot(scores, Path(args.plot))
        except ImportError:
            print("imagesearch eval: --plot needs matplotlib (pip install -e '.[dev]')", file=sys.stderr)
            return 2
    failed = sum(1 for r in runs if r.error)
    if failed:
        first = next(r for r in runs if r.error)
        print(f"{failed} searches failed, e.g. {first.query_id}: {first.error}", file=sys.stderr)
        return 1
    return 0
