"""Replacing a small file so that a crash leaves the old or the new content, never a torn one.

Used for the suite's own state files (re-index checkpoints, the embedded index's model registry and
active pointers, drift references) and the local object store's blobs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def replace_durably(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path`, fsync the
    directory (the rename itself must survive a power loss too). The temporary file never outlives
    a failed write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def write_json_durably(path: Path, content: object) -> None:
    replace_durably(path, json.dumps(content).encode())


def fsync_directory(directory: Path) -> None:
    """Make a rename (or a removal) in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
