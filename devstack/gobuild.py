"""Build a pinned Go binary from source with the Go module proxy, once, into the shared cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from devstack.common import StackError, cache_dir, file_lock, say, tail


def find_go(what: str) -> str:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
    )
    if not go:
        raise StackError(f"{what} must be built from source but `go` (>= 1.26) is not on PATH")
    return go


def ensure_go_binary(module: str, version: str, binary: Path, what: str, estimate: str) -> Path:
    """``binary``, built by ``go install module@version`` when it is not cached.

    The build runs under a lock named after ``what`` (two test sessions do not race it), and waits for a
    build of the same module started by hand instead of racing it (for at most 45 min, in case what
    matched is not really a build).
    """
    if binary.is_file():
        return binary
    slug = what.lower().replace(" ", "-")
    with file_lock(cache_dir() / f"{slug}-build.lock", f"the {what} build"):
        t0 = time.monotonic()
        while not binary.is_file() and _foreign_build_running(module) and time.monotonic() - t0 < 45 * 60:
            say(f"another `go install {module}` is running; waiting for it ({time.monotonic() - t0:.0f}s)")
            time.sleep(15)
        if not binary.is_file():
            _build(module, version, binary, what, estimate, cache_dir() / f"{slug}-build.log")
    return binary


def _foreign_build_running(module: str) -> bool:
    """Is some other process (not holding our lock, e.g. started by hand) already running this build?"""
    proc = subprocess.run(["pgrep", "-f", f"go install.*{module}@"], capture_output=True, text=True)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _build(module: str, version: str, binary: Path, what: str, estimate: str, log: Path) -> None:
    go = find_go(what)
    env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(binary.parent)}
    cmd = [go, "install", "-v", f"{module}@{version}"]
    say(f"building {what} {version} from source ({estimate} on 2 cores); log: {log}")
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        last = time.monotonic()
        try:
            while proc.poll() is None:
                time.sleep(2)
                if time.monotonic() - last >= 30:
                    last = time.monotonic()
                    line = tail(log, 1).strip() or "(compiling)"
                    say(f"  {what} build {last - t0:.0f}s: {line[:120]}")
        except BaseException:  # Ctrl-C: do not leave an orphan compiler behind
            proc.terminate()
            proc.wait()
            raise
    if proc.returncode != 0 or not binary.is_file():
        raise StackError(f"{what} build failed ({proc.returncode}); log {log}:\n{tail(log)}")
    say(f"{what} {version} built in {time.monotonic() - t0:.0f}s: {binary}")
