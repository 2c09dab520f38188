"""The command line: ``python -m devstack up|down|status|env|prepare|start|stop``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from devstack.common import REPO_ROOT, StackError, say
from devstack.registry import COMPONENT_NAMES
from devstack.supervisor import Stack

_COMMANDS = (
    ("up", "start what is not running and wait until ready"),
    ("down", "stop components and forget their state"),
    ("status", "show components"),
    ("env", "print KEY=VALUE lines for the services"),
    ("prepare", "install / download / build binaries only"),
    ("start", "start one component (on its previous ports when free)"),
    ("stop", "stop one component, keeping its ports for `start`"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="The real local backend stack: Redis, Weaviate and Triton as processes on 127.0.0.1.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd, help_ in _COMMANDS:
        p = sub.add_parser(cmd, help=help_)
        if cmd in ("start", "stop"):
            p.add_argument("name", choices=COMPONENT_NAMES)
        else:
            p.add_argument(
                "--only", default=None, help="comma-separated subset of: " + ",".join(COMPONENT_NAMES)
            )
        if cmd in ("up", "start"):
            p.add_argument("--model-config-name", default=None, help="Triton --model-config-name")
            p.add_argument(
                "--model-repository", default=None, help="Triton model repository (default: triton_models/)"
            )
        if cmd == "down":
            p.add_argument(
                "--purge", action="store_true", help="also delete the components' data directories"
            )
        if cmd == "status":
            p.add_argument("--json", action="store_true")
    parser.add_argument("--repo-root", default=str(REPO_ROOT), help=argparse.SUPPRESS)
    return parser


def _print_status(stack: Stack, as_json: bool) -> int:
    """Prints every component's state; exit status 1 when one is unhealthy."""
    status = stack.status()
    if as_json:
        print(json.dumps({k: dataclasses.asdict(v) for k, v in status.items()}, indent=2))
    else:
        for s in status.values():
            ports = " ".join(f"{k}={v}" for k, v in s.ports.items())
            pid = f"pid {s.pid}" if s.pid else ""
            print(f"{s.name:9} {s.state:9} {pid:11} {ports} {s.detail}".rstrip())
    return 0 if all(s.state != "unhealthy" for s in status.values()) else 1


def _run(stack: Stack, args: argparse.Namespace) -> int:
    if args.cmd in ("up", "start"):
        t0 = time.monotonic()
        info = stack.up(only=args.only if args.cmd == "up" else [args.name])
        say(
            f"up in {time.monotonic() - t0:.1f}s (started: {', '.join(info.started) or 'nothing'}); "
            f"env written to {stack.dir / 'env'}"
        )
        return _print_status(stack, as_json=False)
    if args.cmd == "down":
        stopped = stack.down(only=args.only, purge=args.purge)
        say(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    if args.cmd == "status":
        return _print_status(stack, as_json=args.json)
    if args.cmd == "env":
        for k, v in stack.info(only=args.only).env().items():
            print(f"{k}={v}")
        return 0
    if args.cmd == "stop":
        say(f"{args.name}: {'stopped' if stack.stop(args.name) else 'was not running'}")
        return 0
    if args.cmd == "prepare":
        stack.prepare(args.only)
        return 0
    return 2


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stack = Stack(
        args.repo_root,
        model_repository=getattr(args, "model_repository", None),
        model_config_name=getattr(args, "model_config_name", None),
    )
    try:
        return _run(stack, args)
    except StackError as e:
        say(f"ERROR: {e}")
        return 1
