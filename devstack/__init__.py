"""The real local backend stack: Redis, Weaviate and Triton, as plain processes on 127.0.0.1, and MinIO
(the object store) when asked for by name (``--only minio``; optional components are not in a plain ``up``).

Both an importable package (pytest fixtures, benchmarks) and a CLI::

    python -m devstack up     [--only redis,weaviate,triton] [--model-config-name NAME]
                              [--model-repository PATH]
    python -m devstack down   [--only ...] [--purge]
    python -m devstack status [--json]
    python -m devstack env    [--only ...]
    python -m devstack prepare [--only ...]     # install/download/build only, start nothing
    python -m devstack stop|start NAME          # one component; start reuses its ports

Python API::

    stack = Stack(repo_root)
    info = stack.up(only=("redis", "triton"))   # -> StackInfo (ports, urls, pids, what this call started)
    stack.stop("triton"); stack.start("triton") # same ports again when they are still free
    stack.down(only=info.started)

Map of the package:
- ``supervisor.py``: ``Stack``, which starts, reuses, waits for and stops components; ``state.py`` its
  files under ``<repo>/.stack/``; ``processes.py`` pids and process start times; ``ports.py`` port picking.
- ``component.py``: the interface every component implements; ``redis.py``, ``weaviate.py``,
  ``triton.py``, ``minio.py`` the components; ``registry.py`` which ones the stack runs;
  ``gobuild.py`` the pinned source builds (Weaviate, MinIO).
- ``versions.py``: every pinned component version (docker-compose.yml is checked against it).
- ``cli.py``: the command line.

Binaries and the Triton venv are cached outside the clone, in
``${IMAGESEARCH_CACHE_DIR:-~/.cache/imagesearch}``.
Standard library only, so the CLI also runs from a bare ``python3`` in the repository root.
"""

from devstack.common import HOST, REPO_ROOT, StackError, cache_dir
from devstack.info import ComponentStatus, StackInfo
from devstack.supervisor import Stack
from devstack.versions import WEAVIATE_VERSION

__all__ = [
    "HOST",
    "REPO_ROOT",
    "WEAVIATE_VERSION",
    "ComponentStatus",
    "Stack",
    "StackError",
    "StackInfo",
    "cache_dir",
]
