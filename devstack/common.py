"""What every part of the dev stack shares: where things live, the error type, messages and file locks."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

# The clone this package belongs to (the project is installed editable: `make setup`).
REPO_ROOT = Path(__file__).resolve().parent.parent
# Every component listens on loopback only.
HOST = "127.0.0.1"


class StackError(RuntimeError):
    """A component could not be prepared, started or stopped (message carries the log tail)."""


def cache_dir() -> Path:
    """Cache for binaries and the Triton venv, shared by every clone on the machine."""
    return Path(os.environ.get("IMAGESEARCH_CACHE_DIR") or Path.home() / ".cache" / "imagesearch")


def say(msg: str) -> None:
    """Progress for the person at the terminal (stderr, so stdout stays parseable: `env`, `status --json`)."""
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """Exclusive advisory lock (released by the kernel if we die); says so when it has to wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for {what} (lock {path} held by another process)")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
