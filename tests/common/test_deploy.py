"""docker-compose.yml and the README stay true to the code (no Docker engine here, so the file is
checked statically: it parses, every IMAGESEARCH_* variable is a real, valid setting, health checks
exist, and the Dockerfile's sources exist)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from services.common.config_docs import SETTINGS, render, settings_class, splice

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
OURS = {name: spec for name, spec in COMPOSE["services"].items() if name in SETTINGS and name != "console"}


def test_compose_declares_every_component_with_a_health_check() -> None:
    assert set(COMPOSE["services"]) == {
        "certs",
        "triton",
        "weaviate",
        "redis",
        "minio",
        "encoder",
        "search",
        "gateway",
        "console",
    }
    for name, spec in COMPOSE["services"].items():
        if name != "certs":  # a one-shot job, not a server
            assert "healthcheck" in spec, f"{name} has no health check"


def test_compose_runs_the_internal_hops_over_mutual_tls() -> None:
    assert COMPOSE["services"]["certs"]["command"][:1] == ["init"]
    for name, spec in OURS.items():
        assert spec["environment"][f"IMAGESEARCH_{name.upper()}_TLS_DIR"] == "/certs", name
        assert "certs:/certs:ro" in spec["volumes"], name
        if name != "gateway":  # internal: the health probe needs a suite certificate too
            assert spec["healthcheck"]["test"][-3:-1] == ["--tls-dir", "/certs"], name


def test_compose_weaviate_takes_only_the_search_services_api_key() -> None:
    weaviate_env = COMPOSE["services"]["weaviate"]["environment"]
    assert weaviate_env["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "false"
    assert weaviate_env["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    key = weaviate_env["AUTHENTICATION_APIKEY_ALLOWED_KEYS"]
    assert key.startswith("${WEAVIATE_API_KEY")  # from the operator's environment, not the file
    assert OURS["search"]["environment"]["IMAGESEARCH_SEARCH_WEAVIATE_API_KEY"] == key


@pytest.mark.parametrize("service", sorted(OURS))
def test_compose_env_matches_the_settings_the_code_reads(service: str) -> None:
    spec = OURS[service]
    assert spec["command"] == ["python", "-m", f"services.{service}"]
    env = {k: str(v) for k, v in spec["environment"].items()}
    cls = settings_class(service)
    prefix = cls.model_config["env_prefix"]
    unknown = [k for k in env if not k.startswith(prefix) or k[len(prefix) :].lower() not in cls.model_fields]
    assert not unknown, f"{service}: variables no setting reads: {unknown}"
    # Values must validate as the service would read them at start-up.
    settings = cls(**{k[len(prefix) :].lower(): v for k, v in env.items()})
    port = str(settings.port)  # type: ignore[attr-defined]
    assert spec["healthcheck"]["test"][-1] == port


def test_the_console_is_a_client_of_the_gateway_with_no_suite_certificate() -> None:
    spec = COMPOSE["services"]["console"]
    assert spec["command"] == ["python", "-m", "services.console"]
    env = {k: str(v) for k, v in spec["environment"].items()}
    cls = settings_class("console")
    prefix = cls.model_config["env_prefix"]
    assert all(k.startswith(prefix) and k[len(prefix) :].lower() in cls.model_fields for k in env), env
    settings = cls(**{k[len(prefix) :].lower(): v for k, v in env.items()})
    gateway_port = COMPOSE["services"]["gateway"]["environment"]["IMAGESEARCH_GATEWAY_PORT"]
    assert settings.gateway_address == f"gateway:{gateway_port}"  # type: ignore[attr-defined]
    port = settings.listen_address.rsplit(":", 1)[1]  # type: ignore[attr-defined]
    assert (
        f"{port}:{port}" in spec["ports"] and f"127.0.0.1:{port}/healthz" in spec["healthcheck"]["test"][-1]
    )
    assert "volumes" not in spec  # no certificate: it calls the gateway's public port like any client


def test_gateway_points_at_the_compose_backends() -> None:
    env = OURS["gateway"]["environment"]
    addresses = " ".join(str(v) for k, v in env.items() if k.endswith("_ADDRESS"))
    assert "encoder:50071" in addresses and "search:50072" in addresses


def test_dockerfile_copies_existing_paths() -> None:
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                assert (REPO / src).exists(), f"Dockerfile copies missing {src}"


def test_readme_configuration_reference_is_current() -> None:
    readme = (REPO / "README.md").read_text()
    assert splice(readme, render()) == readme, "README configuration reference is stale: run `make docs`"


def test_readme_names_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    assert re.search(r"^make run$", readme, re.M) and re.search(r"^make test$", readme, re.M)
