"""Process trees from /proc, for benchmarks that count the CPU of a server and its children
(Triton's python-backend stubs, the suite's three services)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def descendants(*roots: int) -> list[int]:
    """The roots and every process below them, roots first."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue  # the process ended while we looked
    found, frontier = list(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.append(child)
                frontier.append(child)
    return found


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by these processes (all their threads); a process that
    ended while we looked counts 0. With `descendants(pid)`: a server and its children."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def pin(pid: int, cpus: set[int]) -> int:
    """Every thread of pid and of its children onto `cpus` (what `taskset -a -p -c` does); threads
    started later inherit it from the thread that starts them. Returns the number of threads pinned."""
    pinned = 0
    for proc in descendants(pid):
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{proc}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)
                    pinned += 1
    return pinned
