"""Triton: the tritonserver binary from the nvidia-pytriton wheel, in a venv of its own, on CPU.

The wheel ships a complete CPU-capable tritonserver, its libraries, the python backend and the backend
stubs for Python 3.8-3.13; we use only those files (pytriton's own Python API is unused). The models of
the repository run ONNX Runtime inside the python backend's stub processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.common import HOST, StackError, cache_dir, file_lock, say, tail
from devstack.component import Component, Launch
from devstack.probes import http_json, http_status
from devstack.versions import PYTRITON_VERSION, TRITON_ONNXRUNTIME_VERSION

# What Triton's venv holds (its hash names the cached venv, so a change here makes a new one).
VENV_REQUIREMENTS: tuple[str, ...] = (
    f"nvidia-pytriton=={PYTRITON_VERSION}",
    f"onnxruntime=={TRITON_ONNXRUNTIME_VERSION}",
    # The Triton 2.51 python backend silently returns EMPTY output tensors when the stub's environment has
    # numpy 2 (its C++ <-> numpy bridge predates the numpy 2 ABI). The service venv may use numpy 2.
    "numpy<2",
)


@dataclasses.dataclass(frozen=True)
class TritonRuntime:
    venv: Path
    tritonserver: Path
    backend_dir: Path
    python_libdir: str
    libs_dir: Path  # nvidia_pytriton.libs: Triton's bundled shared libraries (libcudart, ...)


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
    """Triton's own venv (keyed by VENV_REQUIREMENTS + interpreter) and its backend directory."""
    base, pyver, libdir = _base_python()
    key = hashlib.sha256("\n".join([*VENV_REQUIREMENTS, base, pyver]).encode()).hexdigest()[:12]
    venv = cache_dir() / f"triton-venv-py{pyver}-{key}"
    marker = venv / ".imagesearch-complete"
    with file_lock(cache_dir() / f"triton-venv-{key}.lock", "the Triton venv"):
        if not marker.is_file():
            # A venv is not relocatable, so it is built in place; the marker (written last) tells a
            # complete one from an interrupted one, which is thrown away.
            if venv.exists():
                shutil.rmtree(venv)
            t0 = time.monotonic()
            _create_venv(base, pyver, venv, cache_dir() / f"triton-venv-{key}.log")
            _build_backend_dir(venv, pyver)
            marker.write_text(f"{time.time()}\n")
            say(f"Triton venv ready in {time.monotonic() - t0:.1f}s")
    site = _pytriton_dir(venv)
    return TritonRuntime(
        venv=venv,
        tritonserver=site / "tritonserver" / "bin" / "tritonserver",
        backend_dir=venv / "triton-backends",
        python_libdir=libdir,
        libs_dir=site.parent / "nvidia_pytriton.libs",
    )


def _create_venv(base: str, pyver: str, venv: Path, log: Path) -> None:
    say(f"creating Triton venv {venv} (python {pyver}; ~130 MB download, ~440 MB on disk)")
    say(f"  log: {log}")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    with open(log, "w") as fh:
        for cmd in ([base, "-m", "venv", str(venv)], [*pip, *VENV_REQUIREMENTS]):
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
            if rc != 0:
                raise StackError(f"`{' '.join(cmd)}` failed ({rc}); log {log}:\n{tail(log)}")


def _pytriton_dir(venv: Path) -> Path:
    site = next(iter(sorted(venv.glob("lib/python*/site-packages/pytriton"))), None)
    if site is None:
        raise StackError(f"pytriton is missing from {venv}; delete that directory and retry")
    return site


def _build_backend_dir(venv: Path, pyver: str) -> None:
    """<venv>/triton-backends/python/ with the python backend and the stub for this Python version.

    COPIES, not symlinks: Triton resolves backend libraries and rejects a path that resolves outside
    --backend-directory ("escapes backend directory"). The stub must match the venv's Python X.Y.
    """
    site = _pytriton_dir(venv)
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


def expected_models(model_repository: Path) -> list[str]:
    """Every subdirectory of the model repository is a model for Triton (in the default 'none' mode)."""
    if not model_repository.is_dir():
        return []
    return sorted(p.name for p in model_repository.iterdir() if p.is_dir() and not p.name.startswith("."))


def model_files_stamp(model_repository: Path) -> str:
    """A digest of every model file's path, size and modification time (links followed): it changes
    whenever a file Triton loaded at start is replaced."""
    digest = hashlib.sha256()
    if model_repository.is_dir():
        for path in sorted(model_repository.glob("*/[0-9]*/*")):
            try:
                st = path.stat()
            except OSError:  # a dangling link: prepare() names it
                continue
            digest.update(f"{path.relative_to(model_repository)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _shm_prefix(run_id: str) -> str:
    return f"imagesearch_triton_{run_id}_"


class Triton(Component):
    name = "triton"
    port_names = ("http", "grpc", "metrics")
    # It loads every model (ONNX sessions) before it reports ready.
    ready_timeout_s = 300.0
    # Started with --exit-timeout-secs=10.
    stop_grace_s = 30.0
    # It may hang instead of exiting: it waits for a python-backend stub that could not even be loaded.
    fatal_log_patterns = (
        "error while loading shared libraries",
        "failed to load",
        "Failed to initialize Python stub",
    )

    def __init__(
        self,
        repo_root: Path,
        *,
        model_repository: str | os.PathLike[str] | None = None,
        model_config_name: str | None = None,
    ) -> None:
        repo = (
            model_repository
            or os.environ.get("IMAGESEARCH_TRITON_MODEL_REPOSITORY")
            or repo_root / "triton_models"
        )
        self.model_repository = Path(repo).resolve()
        self.model_config_name = (
            model_config_name or os.environ.get("IMAGESEARCH_TRITON_MODEL_CONFIG_NAME") or None
        )

    def prepare(self) -> None:
        if not self.model_repository.is_dir():
            raise StackError(
                f"Triton model repository {self.model_repository} does not exist "
                "(set --model-repository or IMAGESEARCH_TRITON_MODEL_REPOSITORY)"
            )
        missing = sorted(
            str(link.relative_to(self.model_repository))
            # "*" last: a fixed name would skip dangling links (pathlib checks that it exists)
            for link in self.model_repository.glob("*/[0-9]*/*")
            if link.is_symlink() and not link.exists()
        )
        if missing:  # e.g. triton_models/photo_*: links to a model package's files, assembled at setup
            raise StackError(
                f"model files not assembled yet in {self.model_repository}: {', '.join(missing)} "
                "(run `make models`)"
            )
        ensure_triton_runtime()

    def config(self) -> dict[str, Any]:
        return {
            "venv": str(ensure_triton_runtime().venv),
            "model_repository": str(self.model_repository),
            "model_config_name": self.model_config_name,
            # Triton loads the repository once (model control mode "none"): a model added, or a model
            # file replaced (e.g. a package re-assembled by `make models`), since the start means a
            # restart, or it would go on serving the old graph under the new package's version.
            "expected_models": expected_models(self.model_repository),
            "model_files": model_files_stamp(self.model_repository),
        }

    def command(self, ports: Mapping[str, int], data_dir: Path, run_id: str) -> Launch:
        rt = ensure_triton_runtime()
        env = dict(os.environ)
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
            # server's leftovers can be found and removed (after_stop).
            f"--backend-config=python,shm-region-prefix-name={_shm_prefix(run_id)}",
        ]  # fmt: skip
        if self.model_config_name:
            argv.append(f"--model-config-name={self.model_config_name}")
        return Launch(argv, env)

    def health(self, ports: Mapping[str, int], config: Mapping[str, Any]) -> str | None:
        base = f"http://{HOST}:{ports['http']}"
        code = http_status(f"{base}/v2/health/ready")
        if code != 200:
            return f"/v2/health/ready -> {code}"
        try:
            index = http_json(f"{base}/v2/repository/index", method="POST", body=b"{}")
        except (OSError, ValueError) as e:
            return f"/v2/repository/index failed: {e}"
        states = {m["name"]: m.get("state") for m in index or []}
        not_ready = [m for m in config.get("expected_models", []) if states.get(m) != "READY"]
        if not_ready:
            return f"models not ready: {', '.join(f'{m}={states.get(m)}' for m in not_ready)}"
        return None

    def service_env(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {
            "IMAGESEARCH_ENCODER_BACKEND": "triton",
            "IMAGESEARCH_ENCODER_TRITON_GRPC_URL": f"{host}:{ports['grpc']}",
        }

    def after_stop(self, run_id: str | None) -> None:
        if not run_id:
            return
        for leftover in Path("/dev/shm").glob(_shm_prefix(run_id) + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()
