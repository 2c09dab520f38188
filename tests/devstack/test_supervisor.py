"""The supervisor's logic without the real backends: a component that is a tiny HTTP server
(`python -m http.server`) goes through up, reuse, stop/start on the same ports, restart on a changed
configuration, and down; plus the pure helpers (component selection, configuration changes, ports)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from devstack import Stack, StackError
from devstack.component import Component, Launch
from devstack.ports import PortPicker
from devstack.probes import http_status
from devstack.state import config_changes
from devstack.supervisor import select


class HttpServer(Component):
    """A stand-in component: Python's own HTTP server on one port."""

    name = "web"
    port_names = ("http",)
    ready_timeout_s = 20.0
    stop_grace_s = 5.0
    ready_poll_s = 0.05

    def __init__(self, flavour: str = "plain") -> None:
        self.flavour = flavour

    def prepare(self) -> None:
        pass

    def config(self) -> dict[str, Any]:
        return {"flavour": self.flavour}

    def command(self, ports: Mapping[str, int], data_dir: Path, run_id: str) -> Launch:
        argv = [sys.executable, "-m", "http.server", str(ports["http"]), "--bind", "127.0.0.1"]
        return Launch(argv, {"PATH": "/usr/bin:/bin"})

    def health(self, ports: Mapping[str, int], config: Mapping[str, Any]) -> str | None:
        code = http_status(f"http://127.0.0.1:{ports['http']}/")
        return None if code == 200 else f"/ -> {code}"

    def service_env(self, host: str, ports: Mapping[str, int]) -> dict[str, str]:
        return {"WEB_URL": f"http://{host}:{ports['http']}"}


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, components=[HttpServer()])
    try:
        yield stack
    finally:
        stack.down()


def test_up_starts_then_reuses(web: Stack, tmp_path: Path) -> None:
    first = web.up()
    assert first.started == ("web",)
    assert web.status()["web"].state == "running"
    assert (
        tmp_path / ".stack" / "env"
    ).read_text() == f"WEB_URL=http://127.0.0.1:{first.ports['web']['http']}\n"

    again = Stack(tmp_path, components=[HttpServer()]).up()
    assert again.started == ()
    assert again.pids == first.pids and again.ports == first.ports


def test_stop_keeps_the_ports_for_start(web: Stack) -> None:
    first = web.up()
    assert web.stop("web") is True
    assert web.status()["web"].state == "stopped"
    assert web.info().ports == {}
    assert web.stop("web") is False

    back = web.start("web")
    assert back.started == ("web",)
    assert back.ports == first.ports
    assert back.pids != first.pids


def test_a_changed_configuration_restarts_the_component(web: Stack, tmp_path: Path) -> None:
    first = web.up()
    other = Stack(tmp_path, components=[HttpServer(flavour="other")])
    second = other.up()
    assert second.started == ("web",)
    assert second.pids != first.pids
    assert second.configs["web"] == {"flavour": "other"}


def test_down_forgets_the_state(web: Stack, tmp_path: Path) -> None:
    web.up()
    assert web.down() == ["web"]
    assert not (tmp_path / ".stack" / "state" / "web.json").exists()
    assert (tmp_path / ".stack" / "env").read_text() == ""
    assert web.down() == []


def test_select_keeps_the_stack_order_and_rejects_unknown_names() -> None:
    known = ("redis", "weaviate", "triton")
    assert select(None, known) == known
    assert select("triton, redis", known) == ("redis", "triton")
    assert select(["weaviate"], known) == ("weaviate",)
    with pytest.raises(StackError, match=r"unknown component\(s\) \['minio'\]"):
        select("redis,minio", known)


def test_config_changes_name_what_differs() -> None:
    assert config_changes({"a": 1, "b": "x"}, {"a": 1, "b": "x"}) == {}
    assert config_changes({"a": 1}, {"a": 2, "b": None}) == {"a": "1 -> 2"}
    assert config_changes({}, {"a": 1}) == {"a": "None -> 1"}


def test_port_picker_prefers_free_previous_ports_and_never_repeats() -> None:
    picker = PortPicker()
    try:
        first = picker.one()
        assert picker.one(prefer=first) != first  # already held by this picker
        low = picker.pair()
        assert picker.one(prefer=low + 1) != low + 1
    finally:
        picker.release()
    again = PortPicker()
    try:
        assert again.one(prefer=first) == first  # released: free again
    finally:
        again.release()


def test_port_picker_skips_a_port_someone_listens_on() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        picker = PortPicker()
        try:
            assert picker.one(prefer=taken) != taken
        finally:
            picker.release()
