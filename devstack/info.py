"""What callers get back: where the running components listen, and each component's state."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from devstack.common import HOST


def _port(ports: Mapping[str, Mapping[str, int]], component: str, name: str) -> int | None:
    return ports.get(component, {}).get(name)


@dataclasses.dataclass(frozen=True)
class StackInfo:
    """Where the running components listen. A component that is not running has no entry."""

    host: str = HOST
    # component -> port name -> port number, e.g. ports["weaviate"]["grpc"]
    ports: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    pids: Mapping[str, int] = dataclasses.field(default_factory=dict)
    # Components this particular up()/start() call launched (the rest were reused): a fixture tears down
    # only these, leaving a developer's already-running stack alone.
    started: tuple[str, ...] = ()
    # component -> the configuration its process was started with (Component.config())
    configs: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    # Settings that point the services at the running components (Component.service_env()).
    service_env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """`set -a; . .stack/env; make run` runs the suite on the real stack with these."""
        return dict(self.service_env)

    # Shorthands for the components this project runs (callers and tests read these).

    @property
    def redis_port(self) -> int | None:
        return _port(self.ports, "redis", "port")

    @property
    def weaviate_http_port(self) -> int | None:
        return _port(self.ports, "weaviate", "http")

    @property
    def weaviate_grpc_port(self) -> int | None:
        return _port(self.ports, "weaviate", "grpc")

    @property
    def weaviate_metrics_port(self) -> int | None:
        return _port(self.ports, "weaviate", "metrics")

    @property
    def triton_http_port(self) -> int | None:
        return _port(self.ports, "triton", "http")

    @property
    def triton_grpc_port(self) -> int | None:
        return _port(self.ports, "triton", "grpc")

    @property
    def triton_metrics_port(self) -> int | None:
        return _port(self.ports, "triton", "metrics")

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

    @property
    def model_repository(self) -> str | None:
        """The model repository the running Triton serves."""
        return self.configs.get("triton", {}).get("model_repository")

    @property
    def model_config_name(self) -> str | None:
        """The --model-config-name the running Triton was started with (None: config.pbtxt)."""
        return self.configs.get("triton", {}).get("model_config_name")


@dataclasses.dataclass(frozen=True)
class ComponentStatus:
    name: str
    state: str  # "running" | "unhealthy" | "stopped"
    pid: int | None
    ports: Mapping[str, int]
    detail: str = ""
    log: str | None = None
