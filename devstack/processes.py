"""Processes the stack starts: identity (pid + kernel start time), launching, stopping.

A pid alone does not identify our process: after a reboot or a long while the kernel may give the same
pid to another program. The kernel start time recorded at launch does, so every liveness check compares
both.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from devstack.common import say

# Popen objects of the processes this Python process started, so that they are reaped (no zombies, no
# "subprocess still running" ResourceWarnings in pytest) when they are stopped from the same process.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def start_ticks(pid: int) -> int | None:
    """Kernel start time of a live (non-zombie) process, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie / dead
        return None
    return int(fields[19])  # field 22: starttime


def alive(pid: int | None, ticks: int | None) -> bool:
    """Is the process we started (this pid, started at these ticks) still running?"""
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    now = start_ticks(pid)
    return now is not None and (ticks is None or now == ticks)


def launch(argv: list[str], env: Mapping[str, str], cwd: Path, log_path: Path) -> tuple[int, int]:
    """Start ``argv`` with its output appended to ``log_path``; returns (pid, log offset of this start)."""
    with open(log_path, "ab") as log:
        log_offset = log.tell()
        log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
        log.flush()
        # A session of its own: the process outlives this CLI call, a Ctrl-C in the shell that ran
        # `up` does not reach it, and its process group (Triton's stub processes) can be signalled.
        proc = subprocess.Popen(
            argv, env=dict(env), cwd=str(cwd), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )  # fmt: skip
    _CHILDREN[proc.pid] = proc
    return proc.pid, log_offset


def terminate(name: str, pid: int, ticks: int | None, grace_s: float) -> bool:
    """SIGTERM, wait, SIGKILL the process group as a last resort. True if the process was running."""
    was_alive = alive(pid, ticks)
    if was_alive:
        t0 = time.monotonic()
        # SIGTERM to the main process only: Triton then unloads its models and its stubs clean their
        # /dev/shm regions; Weaviate flushes its LSM stores.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = t0 + grace_s
        while alive(pid, ticks) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid, ticks):
            say(f"{name}: pid {pid} ignored SIGTERM for {grace_s:.0f}s; sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while alive(pid, ticks) and time.monotonic() < deadline + 10:
                time.sleep(0.1)
        say(f"{name}: stopped pid {pid} in {time.monotonic() - t0:.2f}s")
    if ticks is not None and start_ticks(pid) is None:
        # Leftovers of our group (a python-backend stub whose server was killed). The pid is our
        # session id (start_new_session), so the group cannot be anyone else's while it has members.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    _CHILDREN.pop(pid, None)
    return was_alive
