"""What a backend component of the stack must provide; the supervisor needs nothing else.

Adding a component (an object store, a second Weaviate node) means one new module with a subclass of
``Component`` and one line in ``devstack/registry.py``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from devstack.ports import PortPicker


@dataclasses.dataclass(frozen=True)
class Launch:
    """How to start one process of a component."""

    argv: list[str]
    env: dict[str, str]


class Component(abc.ABC):
    """One backend process: how to install it, start it, tell it is ready, and point the services at it."""

    name: ClassVar[str]
    # Ports it needs, in the order they are allocated (the keys of every ``ports`` mapping below).
    port_names: ClassVar[tuple[str, ...]]
    # Seconds a freshly started process may take to report ready.
    ready_timeout_s: ClassVar[float]
    # Seconds between SIGTERM and SIGKILL.
    stop_grace_s: ClassVar[float]
    # How often readiness is polled while waiting.
    ready_poll_s: ClassVar[float] = 0.25
    # Log lines after which waiting is pointless (the process may hang instead of exiting).
    fatal_log_patterns: ClassVar[tuple[str, ...]] = ()
    # Optional components start only when named (``up(only=...)``, ``--only``); a plain ``up`` skips them.
    optional: ClassVar[bool] = False

    @abc.abstractmethod
    def prepare(self) -> None:
        """Make sure its binaries exist (may install, download or build); starts nothing."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """What a running process must have been started with to be reused (JSON-serialisable)."""

    def pick_ports(self, picker: PortPicker, previous: Mapping[str, int]) -> dict[str, int]:
        """Free ports for a start, the previous ones when they are still free."""
        return {name: picker.one(prefer=previous.get(name)) for name in self.port_names}

    @abc.abstractmethod
    def command(self, ports: Mapping[str, int], data_dir: Path, run_id: str) -> Launch:
        """The process to start on these ports, keeping its files in ``data_dir``."""

    @abc.abstractmethod
    def health(self, ports: Mapping[str, int], config: Mapping[str, Any]) -> str | None:
        """None when the process on these ports is ready, else a short reason."""

    @abc.abstractmethod
    def service_env(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        """Settings that point the imagesearch services at this component (their own env names)."""

    def after_stop(self, run_id: str | None) -> None:  # noqa: B027  (optional hook)
        """Remove what a stopped (possibly killed) process of the start ``run_id`` left behind."""
