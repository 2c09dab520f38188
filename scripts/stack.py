"""The real local backend stack: Redis, Weaviate and Triton, as plain processes on 127.0.0.1.

Both an importable module (pytest fixtures, benchmarks) and a CLI::

    python -m scripts.stack up     [--only redis,weaviate,triton] [--model-config-name NAME]
                                   [--model-repository PATH]
    python -m scripts.stack down   [--only ...] [--purge]
    python -m scripts.stack status [--json]
    python -m scripts.stack env    [--only ...]
    python -m scripts.stack prepare [--only ...]     # install/download/build only, start nothing
    python -m scripts.stack stop|start NAME          # one component; start reuses its ports

Python API::

    stack = Stack(repo_root)
    info = stack.up(only=("redis", "triton"))   # -> StackInfo (ports, urls, pids, what this call started)
    stack.stop("triton"); stack.start("triton") # same ports again when they are still free
    stack.down(only=info.started)

Design notes
- State lives in ``<repo>/.stack/`` (gitignored): ``state/<name>.json`` (pid, process start time, ports,
  config), ``logs/<name>.log``, ``data/<name>/``, ``env`` (KEY=VALUE lines for the services) and a lock file
  that serialises concurrent ``up``/``down`` calls (two pytest sessions, a developer's shell).
- ``up`` is idempotent: a component whose recorded process is alive (same pid AND same kernel start time,
  so a recycled pid is not mistaken for ours), healthy and started with the same configuration is reused.
- ``stop`` keeps the component's ports on record so ``start`` brings it back on the same ports (clients
  configured from a StackInfo keep working, e.g. a test that stops Triton to see UNAVAILABLE and
  restarts it); ``down`` forgets everything.
- Binaries and the Triton venv are cached outside the clone, in
  ``${IMAGESEARCH_CACHE_DIR:-~/.cache/imagesearch}``.
- Standard library only, so the CLI also runs from a bare ``python3``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
COMPONENTS: tuple[str, ...] = ("redis", "weaviate", "triton")

WEAVIATE_VERSION = "v1.39.0"
WEAVIATE_MODULE = "github.com/weaviate/weaviate/cmd/weaviate-server"

# Seconds to wait for a freshly started process to report ready. Weaviate bootstraps its one-node Raft
# cluster and Triton loads every model (ONNX sessions) before it reports ready.
READY_TIMEOUT_S: dict[str, float] = {"redis": 30.0, "weaviate": 180.0, "triton": 300.0}
# Seconds between SIGTERM and SIGKILL. Triton is started with --exit-timeout-secs=10.
STOP_GRACE_S: dict[str, float] = {"redis": 10.0, "weaviate": 30.0, "triton": 30.0}

# Log lines after which waiting is pointless (the process may hang instead of exiting: Triton waits for a
# python-backend stub that could not even be loaded).
FATAL_LOG_PATTERNS: dict[str, tuple[str, ...]] = {
    "redis": (),
    "weaviate": (),
    "triton": ("error while loading shared libraries", "failed to load", "Failed to initialize Python stub"),
}

# Ports each component needs, in the order they are allocated.
PORT_NAMES: dict[str, tuple[str, ...]] = {
    "redis": ("port",),
    "weaviate": ("http", "grpc", "metrics", "gossip", "data", "raft", "raft_rpc"),
    "triton": ("http", "grpc", "metrics"),
}


class StackError(RuntimeError):
    """A component could not be prepared, started or stopped (message carries the log tail)."""


def cache_dir() -> Path:
    """Cache for binaries and the Triton venv, shared by every clone on the machine."""
    return Path(os.environ.get("IMAGESEARCH_CACHE_DIR") or Path.home() / ".cache" / "imagesearch")


def _say(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def _parse_only(only: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalise ``only`` ("redis,triton", a list, or None for all) to an ordered tuple of names."""
    if only is None:
        return COMPONENTS
    names = [n.strip() for n in (only.split(",") if isinstance(only, str) else only) if n.strip()]
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        raise StackError(f"unknown component(s) {unknown}; known: {', '.join(COMPONENTS)}")
    return tuple(n for n in COMPONENTS if n in names)


# --------------------------------------------------------------------------------------------------
# Public result type


@dataclasses.dataclass(frozen=True)
class StackInfo:
    """Where the running components listen. A port is None when its component is not running."""

    host: str = HOST
    redis_port: int | None = None
    weaviate_http_port: int | None = None
    weaviate_grpc_port: int | None = None
    weaviate_metrics_port: int | None = None
    triton_http_port: int | None = None
    triton_grpc_port: int | None = None
    triton_metrics_port: int | None = None
    pids: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # Components this particular up()/start() call launched (the rest were reused): a fixture tears down
    # only these, leaving a developer's already-running stack alone.
    started: tuple[str, ...] = ()
    model_repository: str | None = None
    model_config_name: str | None = None

    @property
    def redis_url(self) -> str | None:
        return f"redis://{self.host}:{self.redis_port}/0" if self.redis_port else None

    @property
    def weaviate_http_url(self) -> str | None:
        return f"http://{self.host}:{self.weaviate_http_port}" if self.weaviate_http_port else None

    @property
    def triton_grpc_url(self) -> str | None:
        return f"{self.host}:{self.triton_grpc_port}" if self.triton_grpc_port else None

    @property
    def triton_http_url(self) -> str | None:
        return f"{self.host}:{self.triton_http_port}" if self.triton_http_port else None

    def env(self) -> dict[str, str]:
        """Settings that point the services at the running components (their own env names), so
        `set -a; . .stack/env; make run` runs the suite on the real stack."""
        env: dict[str, str] = {}
        if self.redis_port:
            env["IMAGESEARCH_SEARCH_CACHE"] = "redis"
            env["IMAGESEARCH_SEARCH_REDIS_URL"] = self.redis_url or ""
        if self.weaviate_http_port:
            env["IMAGESEARCH_SEARCH_BACKEND"] = "weaviate"
            env["IMAGESEARCH_SEARCH_WEAVIATE_HOST"] = self.host
            env["IMAGESEARCH_SEARCH_WEAVIATE_HTTP_PORT"] = str(self.weaviate_http_port)
            env["IMAGESEARCH_SEARCH_WEAVIATE_GRPC_PORT"] = str(self.weaviate_grpc_port)
        if self.triton_grpc_port:
            env["IMAGESEARCH_ENCODER_BACKEND"] = "triton"
            env["IMAGESEARCH_ENCODER_TRITON_GRPC_URL"] = self.triton_grpc_url or ""
        return env


@dataclasses.dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # "running" | "unhealthy" | "stopped"
    pid: int | None
    ports: Mapping[str, int]
    detail: str = ""
    log: str | None = None


# --------------------------------------------------------------------------------------------------
# Processes and ports


def _proc_start_ticks(pid: int) -> int | None:
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


# Popen objects of the processes this Python process started, so that they are reaped (no zombies, no
# "subprocess still running" ResourceWarnings in pytest) when they are stopped from the same process.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _alive(pid: int | None, start_ticks: int | None) -> bool:
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    ticks = _proc_start_ticks(pid)
    return ticks is not None and (start_ticks is None or ticks == start_ticks)


class _PortPicker:
    """Finds free loopback ports and keeps them bound until release().

    Holding the sockets while all ports of one start are chosen keeps two components (or two ports of
    one) from getting the same number; they are released just before the processes are spawned. Both TCP
    and UDP are checked because Weaviate's gossip (memberlist) uses the same port number for both, and on
    all interfaces (the stricter test) because Weaviate binds some ports on all interfaces (see _command).
    """

    def __init__(self) -> None:
        self._held: list[socket.socket] = []
        self._ports: set[int] = set()

    def _hold(self, port: int) -> bool:
        if port in self._ports or not 0 < port < 65536:
            return False
        socks = []
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                s = socket.socket(socket.AF_INET, kind)
                socks.append(s)
                if kind == socket.SOCK_STREAM:
                    # Like the servers themselves: ignore TIME_WAIT leftovers of a stopped server (a
                    # restart keeps its ports) but still fail on a port someone listens on.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("", port))
        except OSError:
            for s in socks:
                s.close()
            return False
        self._held.extend(socks)
        self._ports.add(port)
        return True

    def one(self, prefer: int | None = None) -> int:
        if prefer and self._hold(prefer):
            return prefer
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))  # the kernel picks a free ephemeral port
                port = s.getsockname()[1]
            if self._hold(port):
                return port
        raise StackError("could not find a free port on 127.0.0.1")

    def pair(self, prefer: int | None = None) -> int:
        """A port P with P+1 also free (Weaviate: RAFT_INTERNAL_RPC_PORT must be RAFT_PORT+1)."""
        if prefer and prefer + 1 not in self._ports and self._hold(prefer):
            if self._hold(prefer + 1):
                return prefer
        for _ in range(200):
            port = self.one()
            if self._hold(port + 1):
                return port
        raise StackError("could not find two consecutive free ports on 127.0.0.1")

    def release(self) -> None:
        for s in self._held:
            s.close()
        self._held.clear()


def _http_status(
    url: str, *, method: str = "GET", body: bytes | None = None, timeout: float = 2.0
) -> int | None:
    """HTTP status of a loopback request, or None when nothing answered. Ignores *_proxy variables."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with opener.open(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


def _http_json(url: str, *, method: str = "GET", body: bytes | None = None, timeout: float = 2.0) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, data=body, method=method)
    with opener.open(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def _tcp_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _redis_ping(port: int, timeout: float = 1.0) -> bool:
    """PING in raw RESP (keeps this module free of the redis package)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def _flock(path: Path, what: str) -> Iterator[None]:
    """Exclusive advisory lock (released by the kernel if we die)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for {what} (lock {path} held by another process)")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------
# Artifacts in the cache (binaries, Triton venv)


def ensure_redis_server() -> Path:
    """Path of Debian's redis-server, installing the package when it is missing."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if found:
        return Path(found)
    _say("redis-server not found: installing Debian package redis-server (apt-get)")
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
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(found, os.X_OK):
        raise StackError("apt-get installed redis-server but no redis-server binary was found")
    _say(f"redis-server installed in {time.monotonic() - t0:.1f}s")
    return Path(found)


def weaviate_binary() -> Path:
    return cache_dir() / f"weaviate-{WEAVIATE_VERSION}" / "weaviate-server"


def _other_weaviate_build_running() -> bool:
    """Is some other process (not holding our lock, e.g. started by hand) already running this build?"""
    proc = subprocess.run(["pgrep", "-f", f"go install.*{WEAVIATE_MODULE}"], capture_output=True, text=True)
    return proc.returncode == 0 and bool(proc.stdout.strip())


def ensure_weaviate_server() -> Path:
    """The pinned weaviate-server binary, built with the Go module proxy when it is not cached.

    No registry ships a Weaviate binary; v1.39.0 is pure Go (CGO_ENABLED=0) and its go.mod has no replace
    directives, so `go install module@version` builds it. Cold: 6-25 min and ~2 GB of module cache.
    """
    binary = weaviate_binary()
    if binary.is_file():
        return binary
    cache = cache_dir()
    with _flock(cache / "weaviate-build.lock", "the Weaviate build"):
        t0 = time.monotonic()
        # A build started outside this script (by hand) writes the same binary: wait instead of racing it
        # (for at most 45 min, in case what matched is not really a build).
        while not binary.is_file() and _other_weaviate_build_running() and time.monotonic() - t0 < 45 * 60:
            _say(
                f"another `go install {WEAVIATE_MODULE}` is running; waiting for it "
                f"({time.monotonic() - t0:.0f}s)"
            )
            time.sleep(15)
        if binary.is_file():
            return binary
        go = shutil.which("go") or (
            "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None
        )
        if not go:
            raise StackError("Weaviate must be built from source but `go` (>= 1.26) is not on PATH")
        log = cache / "weaviate-build.log"
        env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(binary.parent)}
        cmd = [go, "install", "-v", f"{WEAVIATE_MODULE}@{WEAVIATE_VERSION}"]
        _say(f"building Weaviate {WEAVIATE_VERSION} from source (about 6-25 min on 2 cores); log: {log}")
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            last = time.monotonic()
            try:
                while proc.poll() is None:
                    time.sleep(2)
                    if time.monotonic() - last >= 30:
                        last = time.monotonic()
                        line = _tail(log, 1).strip() or "(compiling)"
                        _say(f"  Weaviate build {last - t0:.0f}s: {line[:120]}")
            except BaseException:  # Ctrl-C: do not leave an orphan compiler behind
                proc.terminate()
                proc.wait()
                raise
        if proc.returncode != 0 or not binary.is_file():
            raise StackError(f"Weaviate build failed ({proc.returncode}); log {log}:\n{_tail(log)}")
        _say(f"Weaviate {WEAVIATE_VERSION} built in {time.monotonic() - t0:.0f}s: {binary}")
    return binary


@dataclasses.dataclass(frozen=True)
class TritonRuntime:
    venv: Path
    tritonserver: Path
    backend_dir: Path
    python_libdir: str
    libs_dir: Path  # nvidia_pytriton.libs: Triton's bundled shared libraries (libcudart, ...)


def _triton_requirements() -> Path:
    return Path(__file__).resolve().parent / "triton-requirements.txt"


@functools.lru_cache(maxsize=1)
def _base_python() -> tuple[str, str, str]:
    """(real executable, X.Y, LIBDIR) of the interpreter Triton's venv is created from.

    IMAGESEARCH_TRITON_PYTHON overrides; default is the system python3.11 / python3. Resolving the real
    executable (through pyenv shims or an activated venv) keeps the cache key stable.
    """
    cand = (
        os.environ.get("IMAGESEARCH_TRITON_PYTHON") or shutil.which("python3.11") or shutil.which("python3")
    )
    if not cand:
        raise StackError("no python3 found to create Triton's venv (set IMAGESEARCH_TRITON_PYTHON)")
    code = (
        "import sys, sysconfig; "
        "print(getattr(sys, '_base_executable', None) or sys.executable); "
        "print('%d.%d' % sys.version_info[:2]); print(sysconfig.get_config_var('LIBDIR'))"
    )
    out = subprocess.run([cand, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    return out[0], out[1], out[2]


def ensure_triton_runtime() -> TritonRuntime:
    """Triton's own venv (keyed by triton-requirements.txt + interpreter) and its backend directory."""
    base, pyver, libdir = _base_python()
    reqs = _triton_requirements()
    key = hashlib.sha256(reqs.read_bytes() + f"\n{base}\n{pyver}".encode()).hexdigest()[:12]
    venv = cache_dir() / f"triton-venv-py{pyver}-{key}"
    marker = venv / ".imagesearch-complete"
    with _flock(cache_dir() / f"triton-venv-{key}.lock", "the Triton venv"):
        if not marker.is_file():
            # A venv is not relocatable, so it is built in place; the marker (written last) tells a
            # complete one from an interrupted one, which is thrown away.
            if venv.exists():
                shutil.rmtree(venv)
            log = cache_dir() / f"triton-venv-{key}.log"
            _say(f"creating Triton venv {venv} (python {pyver}; ~130 MB download, ~440 MB on disk)")
            _say(f"  log: {log}")
            t0 = time.monotonic()
            with open(log, "w") as fh:
                for cmd in (
                    [base, "-m", "venv", str(venv)],
                    [
                        str(venv / "bin" / "python"),
                        "-m",
                        "pip",
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        "-r",
                        str(reqs),
                    ],
                ):
                    fh.write(f"$ {' '.join(cmd)}\n")
                    fh.flush()
                    rc = subprocess.run(
                        cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                    ).returncode
                    if rc != 0:
                        raise StackError(f"`{' '.join(cmd)}` failed ({rc}); log {log}:\n{_tail(log)}")
            _build_backend_dir(venv, pyver)
            marker.write_text(f"{time.time()}\n")
            _say(f"Triton venv ready in {time.monotonic() - t0:.1f}s")
    site = next(iter(sorted(venv.glob("lib/python*/site-packages/pytriton"))), None)
    if site is None:
        raise StackError(f"pytriton is missing from {venv}; delete that directory and retry")
    return TritonRuntime(
        venv=venv,
        tritonserver=site / "tritonserver" / "bin" / "tritonserver",
        backend_dir=venv / "triton-backends",
        python_libdir=libdir,
        libs_dir=site.parent / "nvidia_pytriton.libs",
    )


def _build_backend_dir(venv: Path, pyver: str) -> None:
    """<venv>/triton-backends/python/ with the python backend and the stub for this Python version.

    COPIES, not symlinks: Triton resolves backend libraries and rejects a path that resolves outside
    --backend-directory ("escapes backend directory"). The stub must match the venv's Python X.Y.
    """
    site = next(iter(sorted(venv.glob("lib/python*/site-packages/pytriton"))), None)
    if site is None:
        raise StackError(f"pytriton did not install into {venv}")
    src_backend = site / "tritonserver" / "backends" / "python"
    src_stub = site / "tritonserver" / "python_backend_stubs" / pyver / "triton_python_backend_stub"
    dst = venv / "triton-backends" / "python"
    dst.mkdir(parents=True, exist_ok=True)
    for src in (
        src_backend / "libtriton_python.so",
        src_backend / "triton_python_backend_utils.py",
        src_stub,
    ):
        if not src.is_file():
            raise StackError(f"expected file missing from the pytriton wheel: {src}")
        shutil.copy2(src, dst / src.name)


# --------------------------------------------------------------------------------------------------
# The stack


class Stack:
    """The local stack of one clone (state in ``<repo_root>/.stack``)."""

    def __init__(
        self,
        repo_root: str | os.PathLike[str] = REPO_ROOT,
        *,
        model_repository: str | os.PathLike[str] | None = None,
        model_config_name: str | None = None,
    ) -> None:
        self.root = Path(repo_root).resolve()
        self.dir = self.root / ".stack"
        self.state_dir = self.dir / "state"
        self.log_dir = self.dir / "logs"
        self.data_dir = self.dir / "data"
        repo = (
            model_repository
            or os.environ.get("IMAGESEARCH_TRITON_MODEL_REPOSITORY")
            or self.root / "triton_models"
        )
        self.model_repository = Path(repo).resolve()
        self.model_config_name = (
            model_config_name or os.environ.get("IMAGESEARCH_TRITON_MODEL_CONFIG_NAME") or None
        )

    # ---- public API ---------------------------------------------------------------------------

    def up(self, only: str | Iterable[str] | None = None) -> StackInfo:
        """Start what is not running (reusing healthy components) and wait until all are ready."""
        names = _parse_only(only)
        with self._lock():
            self.prepare(names)
            started: list[str] = []
            to_start: list[str] = []
            for name in names:
                if self._reusable(name):
                    continue
                to_start.append(name)
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
        with self._lock():
            for name in _parse_only(only):
                if self._stop(name):
                    stopped.append(name)
                self._state_path(name).unlink(missing_ok=True)
                if purge:
                    shutil.rmtree(self.data_dir / name, ignore_errors=True)
            self._write_env()
        return stopped

    def start(self, name: str) -> StackInfo:
        """Start one component (on its previous ports when they are free); no-op if it is running."""
        return self.up(only=[name])

    def stop(self, name: str) -> bool:
        """Stop one component but keep its ports on record for start(). True if it was running."""
        _parse_only([name])
        with self._lock():
            was_running = self._stop(name)
            self._write_env()
        return was_running

    def status(self) -> dict[str, ComponentStatus]:
        out = {}
        for name in COMPONENTS:
            st = self._load(name)
            ports = st.get("ports", {}) if st else {}
            log = str(self.log_dir / f"{name}.log")
            if not st or not _alive(st.get("pid"), st.get("start_ticks")):
                out[name] = ComponentStatus(name, "stopped", None, ports, log=log)
                continue
            problem = self._health(name, st)
            out[name] = ComponentStatus(
                name,
                "running" if problem is None else "unhealthy",
                st["pid"],
                ports,
                detail=problem or "",
                log=log,
            )
        return out

    def info(self, started: tuple[str, ...] = ()) -> StackInfo:
        """StackInfo of the components whose process is alive (health not re-checked)."""
        fields: dict[str, Any] = {}
        pids = {}
        triton_cfg: dict[str, Any] = {}
        for name in COMPONENTS:
            st = self._load(name)
            if not st or not _alive(st.get("pid"), st.get("start_ticks")):
                continue
            pids[name] = st["pid"]
            p = st["ports"]
            if name == "redis":
                fields["redis_port"] = p["port"]
            elif name == "weaviate":
                fields.update(
                    weaviate_http_port=p["http"],
                    weaviate_grpc_port=p["grpc"],
                    weaviate_metrics_port=p["metrics"],
                )
            else:
                fields.update(
                    triton_http_port=p["http"], triton_grpc_port=p["grpc"], triton_metrics_port=p["metrics"]
                )
                triton_cfg = st.get("config", {})
        return StackInfo(
            **fields,
            pids=pids,
            started=started,
            model_repository=triton_cfg.get("model_repository"),
            model_config_name=triton_cfg.get("model_config_name"),
        )

    def env(self) -> dict[str, str]:
        return self.info().env()

    def prepare(self, only: str | Iterable[str] | None = None) -> None:
        """Make sure binaries / venvs exist (may install, download or build); starts nothing."""
        for name in _parse_only(only):
            if name == "redis":
                ensure_redis_server()
            elif name == "weaviate":
                ensure_weaviate_server()
            else:
                if not self.model_repository.is_dir():
                    raise StackError(
                        f"Triton model repository {self.model_repository} does not exist "
                        "(set --model-repository or IMAGESEARCH_TRITON_MODEL_REPOSITORY)"
                    )
                ensure_triton_runtime()

    # ---- state --------------------------------------------------------------------------------

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return _flock(self.dir / "lock", f"the stack in {self.dir}")

    def _state_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def _load(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._state_path(name).read_text()))
        except (OSError, ValueError):
            return None

    def _save(self, name: str, state: dict[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._state_path(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self._state_path(name))

    def _write_env(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{k}={v}" for k, v in self.info().env().items()]
        (self.dir / "env").write_text("".join(line + "\n" for line in lines))

    # ---- per-component specifics ----------------------------------------------------------------

    def _config(self, name: str) -> dict[str, Any]:
        """What a running process must have been started with to be reused."""
        if name == "redis":
            return {"binary": str(ensure_redis_server())}
        if name == "weaviate":
            return {"binary": str(weaviate_binary()), "version": WEAVIATE_VERSION}
        rt = ensure_triton_runtime()
        return {
            "venv": str(rt.venv),
            "model_repository": str(self.model_repository),
            "model_config_name": self.model_config_name,
            # Triton loads the repository once (model control mode "none"): a model added since the
            # start means a restart. (Edits inside a model are not detected: `down --only triton`.)
            "expected_models": self.expected_models(),
        }

    def _command(self, name: str, ports: dict[str, int], run_id: str) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        data = self.data_dir / name
        data.mkdir(parents=True, exist_ok=True)
        if name == "redis":
            argv = [
                str(ensure_redis_server()), "--port", str(ports["port"]), "--bind", HOST,
                "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
                "--dir", str(data), "--logfile", "",
            ]  # fmt: skip
            return argv, env
        if name == "weaviate":
            # Explicit addresses: this network's interface address confuses Weaviate's detection, and
            # with CLUSTER_IN_LOCALHOST the internal Raft RPC port must be RAFT_PORT+1.
            # Caveat: Weaviate 1.39 listens on ":<port>" (all interfaces) for its gRPC API, the cluster
            # data port and the metrics port, with no setting to change it; REST, gossip and Raft honour
            # 127.0.0.1.
            env.update(
                PERSISTENCE_DATA_PATH=str(data),
                AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED="true",
                DEFAULT_VECTORIZER_MODULE="none",
                API_BASED_MODULES_DISABLED="true",
                DISABLE_TELEMETRY="true",
                CLUSTER_HOSTNAME="node1",
                CLUSTER_IN_LOCALHOST="true",
                CLUSTER_BIND_ADDR=HOST,
                CLUSTER_ADVERTISE_ADDR=HOST,
                CLUSTER_GOSSIP_BIND_PORT=str(ports["gossip"]),
                CLUSTER_DATA_BIND_PORT=str(ports["data"]),
                RAFT_PORT=str(ports["raft"]),
                RAFT_INTERNAL_RPC_PORT=str(ports["raft_rpc"]),
                RAFT_JOIN=f"node1:{ports['raft']}",
                RAFT_BOOTSTRAP_EXPECT="1",
                # Weaviate multiplies Raft's 1 s heartbeat/election timeouts by 5 by default (for busy
                # multi-node networks): a one-node loopback cluster then idles 5 s before electing itself.
                RAFT_TIMEOUTS_MULTIPLIER="1",
                GRPC_PORT=str(ports["grpc"]),
                PROMETHEUS_MONITORING_ENABLED="true",
                PROMETHEUS_MONITORING_PORT=str(ports["metrics"]),
                GO_PROFILING_DISABLE="true",
                DISK_USE_READONLY_PERCENTAGE="0",
                GOMEMLIMIT=os.environ.get("IMAGESEARCH_WEAVIATE_GOMEMLIMIT", "4GiB"),
            )
            argv = [str(weaviate_binary()), "--scheme", "http", "--host", HOST, "--port", str(ports["http"])]
            return argv, env
        rt = ensure_triton_runtime()
        # The python backend's stub embeds Python: it finds its packages through the first python on PATH
        # (Triton's venv, with numpy<2), and must load the libpython of the interpreter that venv was made
        # from (LIBDIR first), not Debian's libpython3.11 against another stdlib. The copied stub's RPATH
        # ($ORIGIN/../../../../nvidia_pytriton.libs) no longer points at the wheel's bundled libraries
        # (libcudart, needed even on CPU), hence that directory on LD_LIBRARY_PATH too.
        for var in ("PYTHONPATH", "PYTHONHOME"):
            env.pop(var, None)
        env["VIRTUAL_ENV"] = str(rt.venv)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # no __pycache__ inside the model repository
        env["PATH"] = os.pathsep.join([str(rt.venv / "bin"), env.get("PATH", "")])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in [rt.python_libdir, str(rt.libs_dir), env.get("LD_LIBRARY_PATH", "")] if p
        )
        argv = [
            str(rt.tritonserver),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={rt.backend_dir}",
            f"--grpc-address={HOST}", f"--http-address={HOST}", f"--metrics-address={HOST}",
            f"--grpc-port={ports['grpc']}",
            f"--http-port={ports['http']}",
            f"--metrics-port={ports['metrics']}",
            "--disable-auto-complete-config",
            "--pinned-memory-pool-byte-size=0",
            "--allow-gpu-metrics=false",
            "--exit-timeout-secs=10",
            # Our own prefix (unique per start) for the python backend's /dev/shm regions, so a SIGKILLed
            # server's leftovers can be found and removed (see _stop).
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix(run_id)}",
        ]  # fmt: skip
        if self.model_config_name:
            argv.append(f"--model-config-name={self.model_config_name}")
        return argv, env

    @staticmethod
    def _shm_prefix(run_id: str) -> str:
        return f"imagesearch_triton_{run_id}_"

    def expected_models(self) -> list[str]:
        """Every subdirectory of the model repository is a model for Triton (in the default 'none' mode)."""
        if not self.model_repository.is_dir():
            return []
        return sorted(
            p.name for p in self.model_repository.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def _health(self, name: str, st: Mapping[str, Any]) -> str | None:
        """None when healthy, else a short reason."""
        p = st["ports"]
        if name == "redis":
            return None if _redis_ping(p["port"]) else "no PONG"
        if name == "weaviate":
            code = _http_status(f"http://{HOST}:{p['http']}/v1/.well-known/ready")
            if code != 200:
                return f"/v1/.well-known/ready -> {code}"
            return None if _tcp_open(p["grpc"]) else f"gRPC port {p['grpc']} closed"
        base = f"http://{HOST}:{p['http']}"
        code = _http_status(f"{base}/v2/health/ready")
        if code != 200:
            return f"/v2/health/ready -> {code}"
        try:
            index = _http_json(f"{base}/v2/repository/index", method="POST", body=b"{}")
        except (OSError, ValueError) as e:
            return f"/v2/repository/index failed: {e}"
        states = {m["name"]: m.get("state") for m in index or []}
        not_ready = [m for m in st.get("config", {}).get("expected_models", []) if states.get(m) != "READY"]
        if not_ready:
            return f"models not ready: {', '.join(f'{m}={states.get(m)}' for m in not_ready)}"
        return None

    # ---- lifecycle --------------------------------------------------------------------------------

    def _reusable(self, name: str) -> bool:
        st = self._load(name)
        if not st or not _alive(st.get("pid"), st.get("start_ticks")):
            return False
        want = self._config(name)
        have = st.get("config", {})
        changed = {k: f"{have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v}
        if changed:
            _say(f"{name}: configuration changed ({changed}); restarting it")
            self._stop(name)
            return False
        # Alive and ours: healthy now, or give a process that is still booting its normal time.
        deadline = time.monotonic() + READY_TIMEOUT_S[name]
        problem = self._health(name, st)
        while (
            problem is not None and time.monotonic() < deadline and _alive(st["pid"], st.get("start_ticks"))
        ):
            time.sleep(0.5)
            problem = self._health(name, st)
        if problem is None:
            _say(f"{name}: reusing pid {st['pid']} ports {st['ports']}")
            return True
        _say(f"{name}: pid {st['pid']} is not healthy ({problem}); restarting it")
        self._stop(name)
        return False

    def _spawn(self, names: list[str], *, fresh_ports: bool = False) -> None:
        """Launch processes for ``names`` (ports chosen together, previous ones preferred)."""
        if not names:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        picker = _PortPicker()
        plans = []
        try:
            for name in names:
                old = {} if fresh_ports else (self._load(name) or {}).get("ports", {})
                ports: dict[str, int] = {}
                for pname in PORT_NAMES[name]:
                    if pname == "raft_rpc":
                        continue  # allocated with raft
                    if pname == "raft":
                        ports["raft"] = picker.pair(prefer=old.get("raft"))
                        ports["raft_rpc"] = ports["raft"] + 1
                    else:
                        ports[pname] = picker.one(prefer=old.get(pname))
                run_id = secrets.token_hex(4)
                argv, env = self._command(name, ports, run_id)
                config = self._config(name)
                plans.append((name, ports, run_id, argv, env, config))
        finally:
            picker.release()  # just before the processes bind them
        for name, ports, run_id, argv, env, config in plans:
            log_path = self.log_dir / f"{name}.log"
            with open(log_path, "ab") as log:
                log_offset = log.tell()
                log.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(argv)}\n".encode())
                log.flush()
                # A session of its own: the process outlives this CLI call, a Ctrl-C in the shell that ran
                # `up` does not reach it, and its process group (Triton's stub processes) can be signalled.
                proc = subprocess.Popen(
                    argv, env=env, cwd=str(self.data_dir / name), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                )  # fmt: skip
            _CHILDREN[proc.pid] = proc
            self._save(name, {
                "name": name, "pid": proc.pid, "start_ticks": _proc_start_ticks(proc.pid), "run_id": run_id,
                "ports": ports,
                "argv": argv, "config": config, "log": str(log_path), "log_offset": log_offset,
                "started_at": time.time(),
            })  # fmt: skip
            _say(f"{name}: started pid {proc.pid} ports {ports}")

    def _wait_ready(self, name: str, *, retry_on_port_clash: bool = True) -> None:
        st = self._load(name) or {}
        timeout = READY_TIMEOUT_S[name]
        t0 = time.monotonic()
        problem: str | None = "not started"
        where = self.log_dir / f"{name}.log"
        while time.monotonic() - t0 < timeout:
            if not _alive(st.get("pid"), st.get("start_ticks")):
                # Ports are free when chosen but another process may grab one before we bind: retry
                # once on fresh ports.
                clash = "address already in use" in self._log_since_start(name, st).lower()
                if retry_on_port_clash and clash:
                    _say(f"{name}: a port was taken meanwhile; retrying on fresh ports")
                    self._spawn([name], fresh_ports=True)
                    return self._wait_ready(name, retry_on_port_clash=False)
                tail = self._tail_since_start(name, st)
                raise StackError(f"{name} exited during startup (pid {st.get('pid')}); {where}:\n{tail}")
            problem = self._health(name, st)
            if problem is None:
                _say(f"{name}: ready {time.time() - st.get('started_at', time.time()):.2f}s after start")
                return
            fatal = self._fatal_log_line(name, st)
            if fatal:
                self._stop(name)
                tail = self._tail_since_start(name, st)
                raise StackError(f"{name} failed to start ({fatal.strip()}); {where}:\n{tail}")
            time.sleep(0.1 if name == "redis" else 0.25)
        self._stop(name)
        tail = self._tail_since_start(name, st)
        raise StackError(f"{name} not ready after {timeout:.0f}s ({problem}); {where}:\n{tail}")

    def _log_since_start(self, name: str, st: Mapping[str, Any]) -> str:
        """What the current process wrote (the log file is appended to across restarts)."""
        try:
            with open(self.log_dir / f"{name}.log", "rb") as fh:
                fh.seek(int(st.get("log_offset", 0)))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def _tail_since_start(self, name: str, st: Mapping[str, Any], lines: int = 40) -> str:
        return "\n".join(self._log_since_start(name, st).splitlines()[-lines:]) or "(no output)"

    def _fatal_log_line(self, name: str, st: Mapping[str, Any]) -> str | None:
        patterns = FATAL_LOG_PATTERNS[name]
        if not patterns:
            return None
        text = self._log_since_start(name, st)
        return next((line for line in text.splitlines() if any(p in line for p in patterns)), None)

    def _stop(self, name: str) -> bool:
        """SIGTERM, wait, SIGKILL the process group as a last resort. Keeps the ports on record."""
        st = self._load(name)
        if not st or not st.get("pid"):
            return False
        pid, ticks = st["pid"], st.get("start_ticks")
        was_alive = _alive(pid, ticks)
        if was_alive:
            t0 = time.monotonic()
            # SIGTERM to the main process only: Triton then unloads its models and its stubs clean their
            # /dev/shm regions; Weaviate flushes its LSM stores.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = t0 + STOP_GRACE_S[name]
            while _alive(pid, ticks) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid, ticks):
                _say(f"{name}: pid {pid} ignored SIGTERM for {STOP_GRACE_S[name]:.0f}s; sending SIGKILL")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while _alive(pid, ticks) and time.monotonic() < deadline + 10:
                    time.sleep(0.1)
            _say(f"{name}: stopped pid {pid} in {time.monotonic() - t0:.2f}s")
        if ticks is not None and _proc_start_ticks(pid) is None:
            # Leftovers of our group (a python-backend stub whose server was killed). The pid is our
            # session id (start_new_session), so the group cannot be anyone else's while it has members.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if name == "triton" and st.get("run_id"):
            for leftover in Path("/dev/shm").glob(self._shm_prefix(st["run_id"]) + "*"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        _CHILDREN.pop(pid, None)
        st["pid"] = None
        st["start_ticks"] = None
        self._save(name, st)
        return was_alive


# --------------------------------------------------------------------------------------------------
# CLI


def _print_status(stack: Stack, as_json: bool) -> int:
    status = stack.status()
    if as_json:
        print(json.dumps({k: dataclasses.asdict(v) for k, v in status.items()}, indent=2))
    else:
        for s in status.values():
            ports = " ".join(f"{k}={v}" for k, v in s.ports.items())
            pid = f"pid {s.pid}" if s.pid else ""
            print(f"{s.name:9} {s.state:9} {pid:11} {ports} {s.detail}".rstrip())
    return 0 if all(s.state != "unhealthy" for s in status.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.stack", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for cmd, help_ in (
        ("up", "start what is not running and wait until ready"),
        ("down", "stop components and forget their state"),
        ("status", "show components"),
        ("env", "print KEY=VALUE lines for the services"),
        ("prepare", "install / download / build binaries only"),
        ("start", "start one component (on its previous ports when free)"),
        ("stop", "stop one component, keeping its ports for `start`"),
    ):
        p = sub.add_parser(cmd, help=help_)
        if cmd in ("start", "stop"):
            p.add_argument("name", choices=COMPONENTS)
        else:
            p.add_argument("--only", default=None, help="comma-separated subset of: " + ",".join(COMPONENTS))
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
    args = parser.parse_args(argv)

    stack = Stack(
        args.repo_root,
        model_repository=getattr(args, "model_repository", None),
        model_config_name=getattr(args, "model_config_name", None),
    )
    try:
        if args.cmd in ("up", "start"):
            t0 = time.monotonic()
            info = stack.up(only=args.only if args.cmd == "up" else [args.name])
            _say(
                f"up in {time.monotonic() - t0:.1f}s (started: {', '.join(info.started) or 'nothing'}); "
                f"env written to {stack.dir / 'env'}"
            )
            return _print_status(stack, as_json=False)
        if args.cmd == "down":
            stopped = stack.down(only=args.only, purge=args.purge)
            _say(f"stopped: {', '.join(stopped) or 'nothing was running'}")
            return 0
        if args.cmd == "status":
            return _print_status(stack, as_json=args.json)
        if args.cmd == "env":
            names = set(_parse_only(args.only))
            keys = {"redis": "REDIS", "weaviate": "WEAVIATE", "triton": "TRITON"}
            for k, v in stack.env().items():
                if any(k.startswith(f"IMAGESEARCH_{keys[n]}_") for n in names):
                    print(f"{k}={v}")
            return 0
        if args.cmd == "stop":
            _say(f"{args.name}: {'stopped' if stack.stop(args.name) else 'was not running'}")
            return 0
        if args.cmd == "prepare":
            stack.prepare(args.only)
            return 0
    except StackError as e:
        _say(f"ERROR: {e}")
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
