"""Relevance of the whole suite on the photo package's judgement sets: starts encoder + search +
gateway (embedded, or on the real stack), ingests the gallery with `imagesearch ingest`, then runs
`imagesearch eval` with the arguments given after `--`.

    python -m tools.relevance.photo_set materialise          # once: gallery + query images
    python -m bench.relevance [--mode embedded|stack] -- models/photo/judgements/*.jsonl \\
        --images-root ~/.cache/imagesearch/eval/photo --split heldout --baselines --json out.json

The gateway runs without OCR and the safety detector (the gallery's captions are the keyword text;
neither changes a photo's caption) and without rate limits. Figures: docs/RELEVANCE.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from services import cli
from tests.gateway.suite import Suite
from tests.service_process import REPO_ROOT

EVAL_DIR = Path.home() / ".cache/imagesearch/eval/photo"
API_KEY = "globex-gus"  # the suite's tenant without a licence restriction
UNLIMITED = "1000000"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, eval_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("embedded", "stack"), default="embedded")
    p.add_argument("--gallery", type=Path, default=EVAL_DIR / "gallery")
    args = p.parse_args(own)
    stack, manager = None, None
    if args.mode == "stack":
        from devstack import Stack  # the shared stack: reused when running, else started (and stopped)

        manager = Stack(REPO_ROOT)
        stack = manager.up()
    env = {
        "IMAGESEARCH_GATEWAY_OCR_ENABLED": "false",
        "IMAGESEARCH_GATEWAY_SAFETY_ENABLED": "false",
        **{
            f"IMAGESEARCH_GATEWAY_{kind}_{what}_PER_{who}": UNLIMITED
            for kind in ("SEARCH", "INGEST")
            for what in ("RATE", "BURST")
            for who in ("TENANT", "CALLER")
        },
    }
    suite = Suite(args.mode, stack, gateway_env=env, package="photo").start()
    try:
        assert suite.gateway is not None
        common = ["--gateway", suite.gateway.address, "--api-key", API_KEY]
        rc = cli.main(["ingest", str(args.gallery), *common, "--quiet"])
        if rc:
            return rc
        os.environ.pop("IMAGESEARCH_API_KEY", None)
        return cli.main(["eval", *eval_args, *common])
    finally:
        suite.stop()
        if manager is not None and stack is not None:
            manager.down(only=stack.started)


if __name__ == "__main__":
    raise SystemExit(main())
