"""Addresses of replicated backends, and the channel options that spread calls over the replicas.

An address setting (the gateway's encoder and search addresses, the encoder's Triton URL) takes:
- `host:port`: one backend, as before (gRPC's default pick-first; no client-side health checking);
- `ip:port,ip:port,...`: a static list of replicas (IP literals: a gRPC target names one resolver, and a
  list of host names has none; give a name that resolves to every replica with `dns:///` instead);
- a gRPC target URI: `dns:///name:port` (every address the name resolves to: a Kubernetes headless
  Service), `ipv4:...`, `ipv6:...`, `unix:...`.

Several replicas are balanced per call (round robin), and each one is watched over grpc.health.v1
(gRPC's client-side health checking, proposal A17): a replica that stops answering, or reports
NOT_SERVING (its own backends are down, or it is draining on SIGTERM), gets no new calls until it reports
SERVING again. A replica that does not implement the health service counts as healthy.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated, Any

from pydantic import AfterValidator

_URI_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:")


def grpc_target(address: str) -> str:
    """The gRPC target for an address setting; ValueError (with what to write instead) when invalid."""
    address = address.strip()
    if not address:
        raise ValueError(
            "empty address: give host:port, a comma-separated list of ip:port, or dns:///name:port"
        )
    if address.startswith(_URI_SCHEMES):
        return address
    parts = [part.strip() for part in address.split(",")]
    if len(parts) == 1:
        _split_port(parts[0], address)
        return parts[0]
    families = set()
    for part in parts:
        host, _ = _split_port(part, address)
        try:
            families.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise ValueError(
                f"{address!r}: a list of replicas takes IP addresses ({host!r} is a name); for a name that "
                "resolves to every replica use dns:///name:port"
            ) from None
    if len(families) > 1:
        raise ValueError(f"{address!r}: list IPv4 or IPv6 replicas, not both")
    return ("ipv4:" if families == {4} else "ipv6:") + ",".join(parts)


def _split_port(part: str, address: str) -> tuple[str, int]:
    host, sep, port = part.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r}: {part!r} is not host:port")
    return host, int(port)


def is_balanced(address: str) -> bool:
    """Whether the address may name several replicas (a list or a target URI)."""
    target = grpc_target(address)
    return target.startswith(_URI_SCHEMES)


# A backend that comes back (a restart, a replica rejoining) is reconnected within seconds: gRPC's default
# backoff grows to two minutes, and until the next attempt every call on the channel fails UNAVAILABLE.
RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


def balancing_options(address: str, health_service: str = "") -> list[tuple[str, Any]]:
    """Channel options for `address`: quick reconnects always; round robin over health-checked replicas
    when it may name several. `health_service` is the grpc.health.v1 service name watched ("": the
    replica's overall status)."""
    if not is_balanced(address):
        return list(RECONNECT_OPTIONS)
    config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": health_service},
    }
    return [
        ("grpc.service_config", json.dumps(config)),
        # The configuration is ours: a DNS TXT record must not replace it.
        ("grpc.service_config_disable_resolution", 1),
        *RECONNECT_OPTIONS,
        # A name is re-resolved soon after a replica drops (new pods have new addresses).
        ("grpc.dns_min_time_between_resolutions_ms", 2000),
    ]


BackendAddress = Annotated[str, AfterValidator(lambda value: grpc_target(value) and value)]
"""A settings field holding an address in any form above; invalid forms fail at start-up."""
