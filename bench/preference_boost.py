"""Does the per-caller preference boost help? Measured with the evaluation harness on the photo
package's judgement sets, boost off vs on in the same run, on one gateway with the boost enabled.

    python -m tools.relevance.photo_set materialise          # once: gallery + query images
    python -m bench.preference_boost [--weight 0.1] [--recent-clicks 50] [--json out.json]

1. Start encoder + search + gateway (embedded, photo package; IMAGESEARCH_GATEWAY_PREFERENCE_BOOST_WEIGHT
   = --weight) and ingest the gallery with `imagesearch ingest`.
2. boost off: run the held-out queries as a caller that has clicked nothing (the boost adds nothing to
   a caller without clicks: the same ranking as the boost switched off).
3. The caller then searches every tune-split query and clicks each relevant result its page shows,
   through RecordFeedback (the simulated history; the store keeps the newest --recent-clicks).
4. boost on: the same held-out queries again, as the same caller (its fresh clicks are read at once).
   The tune queries are run again too ("seen" rows): what the boost does for a question asked
   again, the upper bound of an asset-level boost.

Held-out and tune queries come from disjoint label groups (models/photo/judgements: splits by group),
so the held-out rows say whether clicks on one set of things help other queries of the same families.
Prints the harness's markdown table and the on/off ratios per family; figures: docs/RELEVANCE.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

from bench.relevance import EVAL_DIR, UNLIMITED
from services import cli
from services.evaluation.domain import EvalConfig, Judgement, QueryRun
from services.evaluation.judgements import load_judgements
from services.evaluation.report import markdown, score
from services.evaluation.runner import Runner, search_request
from tests.gateway.suite import Suite
from tests.service_process import REPO_ROOT

JUDGEMENTS = sorted((REPO_ROOT / "models/photo/judgements").glob("*.jsonl"))
API_KEY = "globex-gus"  # the suite's tenant without a licence restriction
DEFAULT = EvalConfig("default")  # the server's configuration; only the caller's history differs
REPORTED = ("ndcg@10", "mrr", "hit@1")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--weight", type=float, default=0.1, help="preference_boost_weight of the run")
    p.add_argument(
        "--recent-clicks", type=int, default=None, help="preference_recent_clicks (unset: default)"
    )
    p.add_argument("--gallery", type=Path, default=EVAL_DIR / "gallery")
    p.add_argument("--images-root", type=Path, default=EVAL_DIR)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    judgements = [j for path in JUDGEMENTS for j in load_judgements(path, args.images_root)]
    tune = [j for j in judgements if j.split == "tune"]
    heldout = [j for j in judgements if j.split == "heldout"]

    env = {
        "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
        "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",
        "IMAGESEARCH_GATEWAY_PREFERENCE_BOOST_WEIGHT": str(args.weight),
        **{
            f"IMAGESEARCH_GATEWAY_{kind}_{what}_PER_{who}": UNLIMITED
            for kind in ("SEARCH", "INGEST")
            for what in ("RATE", "BURST")
            for who in ("TENANT", "CALLER")
        },
    }
    if args.recent_clicks is not None:
        env["IMAGESEARCH_GATEWAY_PREFERENCE_RECENT_CLICKS"] = str(args.recent_clicks)
    suite = Suite("embedded", gateway_env=env, package="photo").start()
    try:
        assert suite.gateway is not None
        common = ["--gateway", suite.gateway.address, "--api-key", API_KEY]
        rc = cli.main(["ingest", str(args.gallery), *common, "--quiet"])
        if rc:
            return rc
        stub = suite.gateway_stub()
        metadata = [("authorization", f"Bearer {API_KEY}")]
        runner = Runner(stub, metadata, depth=10)
        runs = _renamed(runner.run(heldout, [DEFAULT]), "boost off (no clicks yet)")
        seen_off = _renamed(runner.run(tune, [DEFAULT]), "boost off (no clicks yet)", seen=True)
        clicks = _click_relevant(stub, metadata, tune)
        runs += _renamed(runner.run(heldout, [DEFAULT]), f"boost on ({clicks} clicks)")
        seen_on = _renamed(runner.run(tune, [DEFAULT]), f"boost on ({clicks} clicks)", seen=True)
    finally:
        suite.stop()

    seen_judgements = [_seen(j) for j in tune]
    scores = score(heldout + seen_judgements, runs + seen_off + seen_on)
    print(
        f"preference boost weight {args.weight}; the caller clicked {clicks} relevant results of "
        f"{len(tune)} tune queries\n"
    )
    print(markdown(scores))
    print("on / off (same run):")
    by = {(s.config.split(" ")[1], s.family): s.metrics for s in scores}
    for fam in sorted({s.family for s in scores}):
        off, on = by.get(("off", fam)), by.get(("on", fam))
        if off is None or on is None:
            continue
        cells = ", ".join(f"{m} {on[m]:.3f} vs {off[m]:.3f} ({_ratio(on[m], off[m])})" for m in REPORTED)
        print(f"  {fam}: {cells}")
    if args.json is not None:
        doc = {
            "weight": args.weight,
            "clicks": clicks,
            "results": [
                {"config": s.config, "family": s.family, "queries": s.queries, **s.metrics} for s in scores
            ],
        }
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return 0


def _click_relevant(
    stub: gateway_pb2_grpc.GatewayServiceStub, metadata: list[tuple[str, str]], tune: list[Judgement]
) -> int:
    """The simulated history: search each tune query, click every relevant result on its page."""
    clicks = 0
    for j in tune:
        resp = stub.Search(search_request(j, DEFAULT, 10), metadata=metadata, timeout=30)
        events = [
            gateway_pb2.FeedbackEvent(
                event_id=f"bench-{uuid.uuid4().hex}",
                kind=gateway_pb2.FEEDBACK_KIND_CLICK,
                search_id=resp.search_id,
                asset_id=r.asset.asset_id,
                rank=rank,
            )
            for rank, r in enumerate(resp.results, start=1)
            if r.asset.asset_id in j.relevant
        ]
        if events and resp.search_id:
            stub.RecordFeedback(
                gateway_pb2.RecordFeedbackRequest(events=events), metadata=metadata, timeout=30
            )
            clicks += len(events)
    return clicks


def _renamed(runs: list[QueryRun], config: str, seen: bool = False) -> list[QueryRun]:
    return [
        QueryRun(
            r.query_id, f"{r.family} (seen)" if seen else r.family, config, r.ranked, r.latency_ms, r.error
        )
        for r in runs
    ]


def _seen(j: Judgement) -> Judgement:
    return Judgement(j.query_id, f"{j.family} (seen)", j.text, j.image, j.relevant, j.split)


def _ratio(on: float, off: float) -> str:
    return f"x{on / off:.3f}" if off else "n/a"


if __name__ == "__main__":
    raise SystemExit(main())
