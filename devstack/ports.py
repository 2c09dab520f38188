"""Choosing free loopback ports for the processes of one start."""

from __future__ import annotations

import socket

from devstack.common import HOST, StackError


class PortPicker:
    """Finds free loopback ports and keeps them bound until release().

    Holding the sockets while all ports of one start are chosen keeps two components (or two ports of
    one) from getting the same number; they are released just before the processes are spawned. Both TCP
    and UDP are checked because Weaviate's gossip (memberlist) uses the same port number for both, and on
    all interfaces (the stricter test) because Weaviate binds some ports on all interfaces.
    """

    def __init__(self) -> None:
        self._held: list[socket.socket] = []
        self._ports: set[int] = set()

    def one(self, prefer: int | None = None) -> int:
        """A free port: ``prefer`` (a component's previous port) when it is still free."""
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
        """Let go of every held port (the processes about to start bind them)."""
        for s in self._held:
            s.close()
        self._held.clear()

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
