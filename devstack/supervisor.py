"""The supervisor: brings the components of one clone's stack up, reuses them, waits for them, stops them.

It knows components only through the ``Component`` interface (devstack/component.py).

- ``up`` is idempotent: a component whose recorded process is alive (same pid AND same kernel start time,
  so a recycled pid is not mistaken for ours), healthy and started with the same configuration is reused.
- ``stop`` keeps the component's ports on record so ``start`` brings it back on the same ports (clients
  configured from a StackInfo keep working, e.g. a test that stops Triton to see UNAVAILABLE and
  restarts it); ``down`` forgets everything.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeGuard

from devstack import processes
from devstack.common import HOST, REPO_ROOT, StackError, say
from devstack.component import Component, Launch
from devstack.info import ComponentStatus, StackInfo
from devstack.ports import PortPicker
from devstack.registry import default_components
from devstack.state import StateFiles, config_changes


def select(only: str | Iterable[str] | None, known: tuple[str, ...]) -> tuple[str, ...]:
    """Normalise ``only`` ("redis,triton", a list, or None for all) to known names, in ``known``'s order."""
    if only is None:
        return known
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise StackError(f"unknown component(s) {unknown}; known: {', '.join(known)}")
    return tuple(n for n in known if n in names)


def _running(state: dict[str, Any] | None) -> TypeGuard[dict[str, Any]]:
    """Is the process a state file records still alive (and still ours)?"""
    if not state:
        return False
    return processes.alive(state.get("pid"), state.get("start_ticks"))


class Stack:
    """The local stack of one clone (state in ``<repo_root>/.stack``)."""

    def __init__(
        self,
        repo_root: str | os.PathLike[str] = REPO_ROOT,
        *,
        model_repository: str | os.PathLike[str] | None = None,
        model_config_name: str | None = None,
        components: Iterable[Component] | None = None,
    ) -> None:
        self.root = Path(repo_root).resolve()
        self.files = StateFiles(self.root)
        self.dir = self.files.dir
        if components is None:
            components = default_components(
                self.root, model_repository=model_repository, model_config_name=model_config_name
            )
        self.components: dict[str, Component] = {c.name: c for c in components}

    # ---- public API ---------------------------------------------------------------------------

    def up(self, only: str | Iterable[str] | None = None) -> StackInfo:
        """Start what is not running (reusing healthy components) and wait until all are ready.
        Without ``only``: every component that is not optional."""
        names = self._select(only) if only is not None else self._required()
        with self.files.lock():
            self.prepare(names)
            to_start = [name for name in names if not self._reusable(name)]
            started: list[str] = []
            # Spawn everything first, then wait: the components boot in parallel.
            try:
                self._spawn(to_start)
                for name in to_start:
                    self._wait_ready(name)
                    started.append(name)
            except BaseException:
                # A failed up() leaves nothing of its own behind (a fixture gets no chance to clean up).
                for name in to_start:
                    self._stop(name)
                raise
            finally:
                self._write_env()
            return self.info(started=tuple(started))

    def down(self, only: str | Iterable[str] | None = None, *, purge: bool = False) -> list[str]:
        """Stop components and forget their state (and delete their data with purge=True)."""
        stopped = []
        with self.files.lock():
            for name in self._select(only):
                if self._stop(name):
                    stopped.append(name)
                self.files.forget(name)
                if purge:
                    shutil.rmtree(self.files.data_dir / name, ignore_errors=True)
            self._write_env()
        return stopped

    def start(self, name: str) -> StackInfo:
        """Start one component (on its previous ports when they are free); no-op if it is running."""
        return self.up(only=[name])

    def stop(self, name: str) -> bool:
        """Stop one component but keep its ports on record for start(). True if it was running."""
        self._select([name])
        with self.files.lock():
            was_running = self._stop(name)
            self._write_env()
        return was_running

    def status(self) -> dict[str, ComponentStatus]:
        out = {}
        for name, component in self.components.items():
            st = self.files.load(name)
            ports = st.get("ports", {}) if st else {}
            log = str(self.files.log_path(name))
            if not _running(st):
                out[name] = ComponentStatus(name, "stopped", None, ports, log=log)
                continue
            problem = component.health(st["ports"], st.get("config", {}))
            state = "running" if problem is None else "unhealthy"
            out[name] = ComponentStatus(name, state, st["pid"], ports, detail=problem or "", log=log)
        return out

    def info(self, started: tuple[str, ...] = (), only: str | Iterable[str] | None = None) -> StackInfo:
        """StackInfo of the components (of ``only``) whose process is alive (health not re-checked)."""
        ports: dict[str, dict[str, int]] = {}
        pids: dict[str, int] = {}
        configs: dict[str, dict[str, Any]] = {}
        env: dict[str, str] = {}
        for name in self._select(only):
            st = self.files.load(name)
            if not _running(st):
                continue
            pids[name] = st["pid"]
            ports[name] = dict(st["ports"])
            configs[name] = dict(st.get("config", {}))
            env.update(self.components[name].service_env(HOST, st["ports"]))
        return StackInfo(HOST, ports=ports, pids=pids, started=started, configs=configs, service_env=env)

    def env(self) -> dict[str, str]:
        return self.info().env()

    def prepare(self, only: str | Iterable[str] | None = None) -> None:
        """Make sure binaries / venvs exist (may install, download or build); starts nothing.
        Without ``only``: every component that is not optional."""
        for name in self._select(only) if only is not None else self._required():
            self.components[name].prepare()

    # ---- steps --------------------------------------------------------------------------------

    def _select(self, only: str | Iterable[str] | None) -> tuple[str, ...]:
        return select(only, tuple(self.components))

    def _required(self) -> tuple[str, ...]:
        return tuple(name for name, c in self.components.items() if not c.optional)

    def _write_env(self) -> None:
        self.files.write_env(self.info().env())

    def _reusable(self, name: str) -> bool:
        """Is the recorded process alive, ours, started with today's configuration, and healthy?
        Stops it when it is alive but not reusable."""
        component = self.components[name]
        st = self.files.load(name)
        if not _running(st):
            return False
        changed = config_changes(st.get("config", {}), component.config())
        if changed:
            say(f"{name}: configuration changed ({changed}); restarting it")
            self._stop(name)
            return False
        # Alive and ours: healthy now, or give a process that is still booting its normal time.
        deadline = time.monotonic() + component.ready_timeout_s
        problem = component.health(st["ports"], st.get("config", {}))
        while problem is not None and time.monotonic() < deadline and _running(st):
            time.sleep(0.5)
            problem = component.health(st["ports"], st.get("config", {}))
        if problem is None:
            say(f"{name}: reusing pid {st['pid']} ports {st['ports']}")
            return True
        say(f"{name}: pid {st['pid']} is not healthy ({problem}); restarting it")
        self._stop(name)
        return False

    def _spawn(self, names: list[str], *, fresh_ports: bool = False) -> None:
        """Launch processes for ``names`` (ports chosen together, previous ones preferred)."""
        if not names:
            return
        self.files.log_dir.mkdir(parents=True, exist_ok=True)
        picker = PortPicker()
        plans: list[tuple[str, dict[str, int], str, Launch, dict[str, Any]]] = []
        try:
            for name in names:
                component = self.components[name]
                previous = {} if fresh_ports else (self.files.load(name) or {}).get("ports", {})
                ports = component.pick_ports(picker, previous)
                run_id = secrets.token_hex(4)
                launch = component.command(ports, self._data_dir(name), run_id)
                plans.append((name, ports, run_id, launch, component.config()))
        finally:
            picker.release()  # just before the processes bind them
        for name, ports, run_id, launch, config in plans:
            log_path = self.files.log_path(name)
            pid, log_offset = processes.launch(launch.argv, launch.env, self._data_dir(name), log_path)
            self.files.save(name, {
                "name": name, "pid": pid, "start_ticks": processes.start_ticks(pid), "run_id": run_id,
                "ports": ports,
                "argv": launch.argv, "config": config, "log": str(log_path), "log_offset": log_offset,
                "started_at": time.time(),
            })  # fmt: skip
            say(f"{name}: started pid {pid} ports {ports}")

    def _data_dir(self, name: str) -> Path:
        data = self.files.data_dir / name
        data.mkdir(parents=True, exist_ok=True)
        return data

    def _wait_ready(self, name: str, *, retry_on_port_clash: bool = True) -> None:
        component = self.components[name]
        st = self.files.load(name) or {}
        timeout = component.ready_timeout_s
        t0 = time.monotonic()
        problem: str | None = "not started"
        where = self.files.log_path(name)
        while time.monotonic() - t0 < timeout:
            if not _running(st):
                # Ports are free when chosen but another process may grab one before we bind: retry
                # once on fresh ports.
                clash = "address already in use" in self.files.log_since_start(name, st).lower()
                if retry_on_port_clash and clash:
                    say(f"{name}: a port was taken meanwhile; retrying on fresh ports")
                    self._spawn([name], fresh_ports=True)
                    return self._wait_ready(name, retry_on_port_clash=False)
                tail = self.files.tail_since_start(name, st)
                raise StackError(f"{name} exited during startup (pid {st.get('pid')}); {where}:\n{tail}")
            problem = component.health(st["ports"], st.get("config", {}))
            if problem is None:
                say(f"{name}: ready {time.time() - st.get('started_at', time.time()):.2f}s after start")
                return
            fatal = self._fatal_log_line(component, st)
            if fatal:
                self._stop(name)
                tail = self.files.tail_since_start(name, st)
                raise StackError(f"{name} failed to start ({fatal.strip()}); {where}:\n{tail}")
            time.sleep(component.ready_poll_s)
        self._stop(name)
        tail = self.files.tail_since_start(name, st)
        raise StackError(f"{name} not ready after {timeout:.0f}s ({problem}); {where}:\n{tail}")

    def _fatal_log_line(self, component: Component, st: Mapping[str, Any]) -> str | None:
        patterns = component.fatal_log_patterns
        if not patterns:
            return None
        text = self.files.log_since_start(component.name, st)
        return next((line for line in text.splitlines() if any(p in line for p in patterns)), None)

    def _stop(self, name: str) -> bool:
        """Stop the recorded process (and clean up after it); keeps the ports on record."""
        st = self.files.load(name)
        if not st or not st.get("pid"):
            return False
        component = self.components[name]
        was_alive = processes.terminate(name, st["pid"], st.get("start_ticks"), component.stop_grace_s)
        component.after_stop(st.get("run_id"))
        st["pid"] = None
        st["start_ticks"] = None
        self.files.save(name, st)
        return was_alive
