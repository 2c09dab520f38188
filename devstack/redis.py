"""Redis: Debian's redis-server, one process. The search cache and rate limits use it as a cache; the
gateway's feedback store keeps events in it, so it runs with an append-only file (fsync every second)
in its data dir."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.common import HOST, StackError, say
from devstack.component import Component, Launch

# Every acknowledged write (feedback events, generations) survives a kill -9 of Redis: fsync per write.
# "everysec" would lose up to a second of them, and a generation counter that comes back lower than a
# number already handed out lets a page cached at that number be served again (services/search/cache.py).
# RDB snapshots are off (the AOF is the one persistence).
REDIS_DURABILITY_ARGS = ("--appendonly", "yes", "--appendfsync", "always")


def ensure_redis_server() -> Path:
    """Path of Debian's redis-server, installing the package when it is missing."""
    found = _find_redis_server()
    if found:
        return found
    say("redis-server not found: installing Debian package redis-server (apt-get)")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    # The package's own service is irrelevant: we run our own process on our own port. (Debian container
    # images ship a policy-rc.d that keeps apt from starting it at all.) The lock timeout makes us queue
    # behind another apt run instead of failing.
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    t0 = time.monotonic()
    for cmd in (
        ["apt-get", *lock, "update"],
        ["apt-get", *lock, "install", "-y", "--no-install-recommends", "redis-server"],
    ):
        proc = subprocess.run([*sudo, *cmd], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise StackError(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
            )
    found = _find_redis_server()
    if not found:
        raise StackError("apt-get installed redis-server but no redis-server binary was found")
    say(f"redis-server installed in {time.monotonic() - t0:.1f}s")
    return found


def _find_redis_server() -> Path | None:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    return Path(found) if found else None


def redis_ping(port: int, timeout: float = 1.0) -> bool:
    """PING in raw RESP (keeps this package free of the redis client)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Redis(Component):
    name = "redis"
    port_names = ("port",)
    ready_timeout_s = 30.0
    stop_grace_s = 10.0
    ready_poll_s = 0.1

    def prepare(self) -> None:
        ensure_redis_server()

    def config(self) -> dict[str, Any]:
        # The durability flags are part of the recorded config, so a Redis started without them (an
        # older checkout's) is restarted rather than silently reused without its append-only file.
        return {"binary": str(ensure_redis_server()), "durability": " ".join(REDIS_DURABILITY_ARGS)}

    def command(self, ports: Mapping[str, int], data_dir: Path, run_id: str) -> Launch:
        argv = [
            str(ensure_redis_server()), "--port", str(ports["port"]), "--bind", HOST,
            "--save", "", *REDIS_DURABILITY_ARGS,
            "--protected-mode", "yes", "--daemonize", "no",
            "--dir", str(data_dir), "--logfile", "",
        ]  # fmt: skip
        return Launch(argv, dict(os.environ))

    def health(self, ports: Mapping[str, int], config: Mapping[str, Any]) -> str | None:
        return None if redis_ping(ports["port"]) else "no PONG"

    def service_env(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {
            "IMAGESEARCH_SEARCH_CACHE": "redis",
            "IMAGESEARCH_SEARCH_REDIS_URL": f"redis://{host}:{ports['port']}/0",
            "IMAGESEARCH_GATEWAY_FEEDBACK_BACKEND": "redis",
            "IMAGESEARCH_GATEWAY_FEEDBACK_REDIS_URL": f"redis://{host}:{ports['port']}/0",
        }
