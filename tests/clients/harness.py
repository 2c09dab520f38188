"""Runs the Go, TypeScript and Java client examples against a gateway and checks what they print.

Each example (clients/<lang>/) prints one JSON line per step on stdout, in this order:

    ingest            one image through the Ingest stream: outcome CREATED (or UPDATED/UNCHANGED)
    search            a text search that must find the ingested asset
    invalid_argument  a search with neither text nor image: INVALID_ARGUMENT
    unauthenticated   a search with a wrong API key: UNAUTHENTICATED
    delete            DeleteAsset of the ingested asset: OK

with `code` (the gRPC status name), `message`, `request_id` (the gateway's x-request-id trailer) and `ok`
(whether the step behaved as the contract says); exit status 0 when every step was ok, 1 otherwise.

`problems(run, mode)` lists every deviation from what the mode expects:
  journey        a gateway that implements the API (the full suite, or tests/clients/fake_gateway.py)
  unimplemented  the gateway skeleton: every call answers UNIMPLEMENTED
  backends_down  a gateway whose encoder and search services are down: the ingested item fails with
                 UNAVAILABLE, search and delete answer UNAVAILABLE, validation and authentication still
                 answer INVALID_ARGUMENT and UNAUTHENTICATED
  unreachable    nothing listens: every step reports UNAVAILABLE

CLI (what scripts/run_client_examples.sh runs):

    python -m tests.clients.harness --addr 127.0.0.1:50051 --api-key KEY [--lang go,ts,java]
        [--mode auto|journey|unimplemented|unreachable] [--require-all]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LANGS = ("go", "ts", "java")
STEPS = ("ingest", "search", "invalid_argument", "unauthenticated", "delete")
MODES = ("journey", "unimplemented", "backends_down", "unreachable")


@dataclass(frozen=True)
class Example:
    lang: str
    argv: tuple[str, ...]
    artifact: Path  # what the build produces
    runtime: str | None  # interpreter that must be on PATH (None: a native binary)
    toolchain: tuple[str, ...]  # what building it needs

    def unavailable(self) -> str | None:
        """Why this example cannot run here (None when it can)."""
        if self.runtime and shutil.which(self.runtime) is None:
            return f"{self.lang}: '{self.runtime}' is not on PATH"
        if not self.artifact.exists():
            missing = [t for t in self.toolchain if shutil.which(t) is None]
            if missing:
                return f"{self.lang}: not built and the toolchain is missing ({', '.join(missing)})"
            return f"{self.lang}: not built ({self.artifact.relative_to(REPO)}): run scripts/gen_clients.sh"
        return None


EXAMPLES = {
    "go": Example(
        "go", (str(REPO / "clients/go/bin/example"),), REPO / "clients/go/bin/example", None, ("go",)
    ),
    "ts": Example(
        "ts",
        ("node", str(REPO / "clients/ts/dist/clients/ts/src/example.js")),
        REPO / "clients/ts/dist/clients/ts/src/example.js",
        "node",
        ("node", "npm"),
    ),
    "java": Example(
        "java",
        ("java", "-jar", str(REPO / "clients/java/target/imagesearch-example.jar")),
        REPO / "clients/java/target/imagesearch-example.jar",
        "java",
        ("java", "mvn"),
    ),
}


@dataclass
class Run:
    lang: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    steps: dict[str, dict[str, object]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)

    def describe(self) -> str:
        head = f"{self.lang} exit {self.returncode} in {self.seconds:.1f}s"
        return f"{head}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def run_example(
    lang: str, addr: str, api_key: str, timeout_s: float = 20.0, extra: tuple[str, ...] = ()
) -> Run:
    """Run one example to completion (each call has `timeout_s` as its deadline)."""
    example = EXAMPLES[lang]
    argv = [*example.argv, "--addr", addr, "--api-key", api_key, "--timeout", f"{timeout_s:g}"]
    t0 = time.monotonic()
    proc = subprocess.run(
        [*argv, *extra], capture_output=True, text=True, timeout=len(STEPS) * timeout_s + 60, cwd=REPO
    )
    run = Run(lang, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0)
    for line in proc.stdout.splitlines():
        try:
            step = json.loads(line)
        except json.JSONDecodeError:
            run.bad_lines.append(line)
            continue
        if not isinstance(step, dict) or "step" not in step:
            run.bad_lines.append(line)
            continue
        run.order.append(str(step["step"]))
        run.steps[str(step["step"])] = step
    return run


def problems(run: Run, mode: str) -> list[str]:
    """Everything in `run` that differs from what `mode` expects (empty: the run is right)."""
    out: list[str] = []
    p = out.append
    if run.bad_lines:
        p(f"stdout lines that are not step JSON: {run.bad_lines}")
    if run.order != list(STEPS):
        p(f"steps {run.order}, expected {list(STEPS)}")
    for name, step in run.steps.items():
        if not isinstance(step.get("code"), str) or not isinstance(step.get("ok"), bool):
            p(f"{name}: needs a string 'code' and a boolean 'ok': {step}")
        if step.get("code") != "OK" and not step.get("message"):
            p(f"{name}: status {step.get('code')} printed without its message")
        answered = step.get("code") not in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
        if answered and not step.get("request_id"):
            p(f"{name}: no x-request-id trailer shown (the gateway echoes one on every call)")
    s = run.steps

    def want(name: str, code: str, ok: bool, **fields: object) -> None:
        step = s.get(name)
        if step is None:
            return
        if step.get("code") != code or step.get("ok") is not ok:
            p(
                f"{name}: code {step.get('code')} ok={step.get('ok')} ({step.get('message')}),"
                f" want {code} ok={ok}"
            )
        for key, value in fields.items():
            if step.get(key) != value:
                p(f"{name}: {key}={step.get(key)!r}, want {value!r}")

    if mode == "journey":
        want("ingest", "OK", True, outcome="INGEST_OUTCOME_CREATED")
        want("search", "OK", True, found=True)
        want("invalid_argument", "INVALID_ARGUMENT", True)
        want("unauthenticated", "UNAUTHENTICATED", True)
        want("delete", "OK", True)
        if s.get("ingest", {}).get("asset_id") != s.get("search", {}).get("asset_id"):
            p("search looked for another asset id than the one ingested")
        expected_rc = 0
    elif mode == "unimplemented":
        for name in STEPS:
            want(name, "UNIMPLEMENTED", False)
        expected_rc = 1
    elif mode == "backends_down":
        want("ingest", "OK", False, outcome="INGEST_OUTCOME_FAILED")
        if "UNAVAILABLE" not in str(s.get("ingest", {}).get("message", "")):
            p(f"ingest: want the item error UNAVAILABLE, got {s.get('ingest', {}).get('message')!r}")
        want("search", "UNAVAILABLE", False)
        want("invalid_argument", "INVALID_ARGUMENT", True)
        want("unauthenticated", "UNAUTHENTICATED", True)
        want("delete", "UNAVAILABLE", False)
        expected_rc = 1
    elif mode == "unreachable":
        for name in STEPS:
            want(name, "UNAVAILABLE", False)
        expected_rc = 1
    else:
        raise ValueError(f"unknown mode {mode!r}")
    if run.returncode != expected_rc:
        p(f"exit status {run.returncode}, want {expected_rc}")
    return out


def detect_mode(addr: str, api_key: str, timeout_s: float = 10.0) -> str:
    """'unreachable' when nothing answers at `addr`, 'unimplemented' when the gateway answers Search with
    UNIMPLEMENTED (the skeleton), else 'journey'."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from imagesearch.v1 import gateway_pb2, gateway_pb2_grpc

    with grpc.insecure_channel(addr) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError as err:
            if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):  # type: ignore[attr-defined]
                return "unreachable"
        try:
            gateway_pb2_grpc.GatewayServiceStub(channel).Search(
                gateway_pb2.SearchRequest(text="probe", page_size=1),
                metadata=(("authorization", f"Bearer {api_key}"),),
                timeout=timeout_s,
            )
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                return "unimplemented"
    return "journey"


def agreement(runs: list[Run]) -> list[str]:
    """Every language must see the same status code at every step."""
    if len(runs) < 2:
        return []
    table = {r.lang: [r.steps.get(n, {}).get("code") for n in STEPS] for r in runs}
    first = runs[0].lang
    return [
        f"{lang} saw {codes}, {first} saw {table[first]}"
        for lang, codes in table.items()
        if codes != table[first]
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", required=True, help="gateway host:port")
    ap.add_argument("--api-key", required=True, help="API key with the search, ingest and delete roles")
    ap.add_argument("--lang", default=",".join(LANGS), help="comma-separated subset of go,ts,java")
    ap.add_argument("--mode", default="auto", choices=("auto", *MODES))
    ap.add_argument("--timeout", type=float, default=20.0, help="deadline of each call, seconds")
    ap.add_argument("--require-all", action="store_true", help="fail when an example cannot run (CI)")
    args = ap.parse_args(argv)

    langs = [lang for lang in args.lang.split(",") if lang]
    unknown = sorted(set(langs) - set(LANGS))
    if unknown:
        ap.error(f"unknown languages {unknown}")
    mode = detect_mode(args.addr, args.api_key) if args.mode == "auto" else args.mode
    print(f"[examples] gateway {args.addr}: mode {mode}", file=sys.stderr)
    failures = 0
    runs = []
    for lang in langs:
        reason = EXAMPLES[lang].unavailable()
        if reason:
            print(f"[examples] {'FAIL' if args.require_all else 'skip'} {reason}", file=sys.stderr)
            failures += args.require_all
            continue
        run = run_example(lang, args.addr, args.api_key, args.timeout)
        runs.append(run)
        found = problems(run, mode)
        print(f"[examples] {lang}: {'ok' if not found else 'FAIL'} ({run.seconds:.1f}s)", file=sys.stderr)
        for problem in found:
            print(f"    {problem}", file=sys.stderr)
        if found:
            print(run.describe(), file=sys.stderr)
            failures += 1
    for problem in agreement(runs):
        print(f"[examples] languages disagree: {problem}", file=sys.stderr)
        failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
