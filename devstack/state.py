"""The stack's files in ``<repo>/.stack/`` (gitignored), and the decision whether a recorded process fits.

Layout: ``state/<name>.json`` (pid, process start time, ports, config, log offset), ``logs/<name>.log``
(appended to across restarts), ``data/<name>/`` (the component's working directory), ``env`` (KEY=VALUE
lines for the services) and ``lock``, which serialises concurrent ``up``/``down`` calls (two pytest
sessions, a developer's shell).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.common import file_lock


class StateFiles:
    """Reads and writes one clone's ``.stack/`` directory."""

    def __init__(self, repo_root: Path) -> None:
        self.dir = repo_root / ".stack"
        self.state_dir = self.dir / "state"
        self.log_dir = self.dir / "logs"
        self.data_dir = self.dir / "data"
        self.env_path = self.dir / "env"

    def lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.dir / "lock", f"the stack in {self.dir}")

    def state_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def load(self, name: str) -> dict[str, Any] | None:
        """The recorded state of a component, or None when there is none (or it is unreadable)."""
        try:
            return dict(json.loads(self.state_path(name).read_text()))
        except (OSError, ValueError):
            return None

    def save(self, name: str, state: Mapping[str, Any]) -> None:
        """Write atomically: a concurrent reader never sees half a file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_path(name))

    def forget(self, name: str) -> None:
        self.state_path(name).unlink(missing_ok=True)

    def write_env(self, env: Mapping[str, str]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env_path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))

    def log_since_start(self, name: str, state: Mapping[str, Any]) -> str:
        """What the recorded process wrote (the log file is appended to across restarts)."""
        try:
            with open(self.log_path(name), "rb") as fh:
                fh.seek(int(state.get("log_offset", 0)))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def tail_since_start(self, name: str, state: Mapping[str, Any], lines: int = 40) -> str:
        return "\n".join(self.log_since_start(name, state).splitlines()[-lines:]) or "(no output)"


def config_changes(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, str]:
    """What differs between the configuration a process was started with and the one wanted now
    (key -> "old -> new"); empty means the process may be reused."""
    return {k: f"{recorded.get(k)!r} -> {v!r}" for k, v in wanted.items() if recorded.get(k) != v}
