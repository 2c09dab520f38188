"""The Helm chart (deploy/helm/imagesearch) rendered by the pinned helm and read back as objects: every
variable it sets is a real setting, probes reach the health-only port, only the gateway is reachable
from outside, the GPU values ask for GPUs, and every manifest passes the strict Kubernetes schema check.
`make helm-check` (scripts/check_helm.sh) runs the same renders through `helm lint` as well."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.config_docs import SETTINGS, settings_class

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "imagesearch"
KUBE_VERSION = "1.33.0"  # the same as scripts/check_helm.sh
# The gRPC services the chart deploys (every settings class but the web console's, which the chart does
# not deploy yet).
CHART_SERVICES = [service for service in SETTINGS if service != "console"]


def _helm() -> str:
    bin_dir = subprocess.run(
        [REPO / "scripts" / "install_tools.sh", "--print-bin"], capture_output=True, text=True, check=True
    ).stdout.strip()
    for candidate in (Path(bin_dir) / "helm", shutil.which("helm")):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.skip("helm is not installed: `scripts/install_tools.sh helm` (make helm-check does it)")


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="module")
def render() -> Render:
    helm = _helm()

    def run(*values_files: str, set_values: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        args = [helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION]
        for name in values_files:
            args += ["-f", str(CHART / name)]
        for item in set_values:
            args += ["--set", item]
        out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=60).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]

    return run


def _by(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(deployment).get("env", []) if "value" in e}


def _unknown_settings(service: str, env: dict[str, str]) -> list[str]:
    cls = settings_class(service)
    prefix = cls.model_config["env_prefix"]
    return [k for k in env if not k.startswith(prefix) or k[len(prefix) :].lower() not in cls.model_fields]


@pytest.mark.parametrize("values", [(), ("values-gpu.yaml",)], ids=["default", "gpu"])
def test_every_variable_in_the_chart_is_a_valid_setting(render: Render, values: tuple[str, ...]) -> None:
    deployments = _by(render(*values), "Deployment")
    for service in CHART_SERVICES:
        env = _env(deployments[f"rel-{service}"])
        assert not _unknown_settings(service, env), f"{service}: variables no setting reads"
        cls = settings_class(service)
        prefix = cls.model_config["env_prefix"]
        settings = cls(**{k[len(prefix) :].lower(): v for k, v in env.items()})  # values validate
        probe_port = _container(deployments[f"rel-{service}"])["readinessProbe"]["grpc"]["port"]
        assert settings.health_port == probe_port  # type: ignore[attr-defined]


def test_the_env_check_catches_a_variable_no_setting_reads(render: Render) -> None:
    docs = render(set_values=("encoder.env.IMAGESEARCH_ENCODER_TRITON_URL=x",))
    env = _env(_by(docs, "Deployment")["rel-encoder"])
    assert _unknown_settings("encoder", env) == ["IMAGESEARCH_ENCODER_TRITON_URL"]


def test_probes_use_the_plaintext_health_port_and_the_main_port_stays_mutual_tls(render: Render) -> None:
    deployments = _by(render(), "Deployment")
    for service in CHART_SERVICES:
        deployment = deployments[f"rel-{service}"]
        container = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["livenessProbe"]["grpc"] == {"port": ports["health"], "service": "liveness"}
        assert container["readinessProbe"]["grpc"] == {"port": ports["health"], "service": ""}
        assert _env(deployment)[f"IMAGESEARCH_{service.upper()}_TLS_DIR"] == "/certs"
        secret = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "certs")
        # Each pod gets only its own key.
        own = ["ca.crt", f"{service}.crt", f"{service}.key"]
        assert [i["path"] for i in secret["secret"]["items"]] == own


def test_only_the_gateway_is_reachable_from_outside(render: Render) -> None:
    policies = _by(render(), "NetworkPolicy")
    for service in ("encoder", "search"):
        grpc_rule = policies[f"rel-{service}"]["spec"]["ingress"][0]
        assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
        [peer] = grpc_rule["from"]
        assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
    [triton_peer] = policies["rel-triton"]["spec"]["ingress"][0]["from"]
    assert triton_peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "encoder"
    redis_peers = policies["rel-redis"]["spec"]["ingress"][0]["from"]
    assert {p["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for p in redis_peers} == {
        "search",
        "gateway",
    }
    gateway_rule = policies["rel-gateway"]["spec"]["ingress"][0]
    assert "from" not in gateway_rule  # any source may call the gateway (values: gateway.allowFrom)


def test_replicas_are_reached_through_headless_services_and_client_side_balancing(render: Render) -> None:
    docs = render()
    services = _by(docs, "Service")
    for name in ("rel-encoder", "rel-search", "rel-triton"):
        assert services[name]["spec"]["clusterIP"] == "None", name
    gateway = _env(_by(docs, "Deployment")["rel-gateway"])
    assert gateway["IMAGESEARCH_GATEWAY_ENCODER_ADDRESS"] == "dns:///rel-encoder:50051"
    assert gateway["IMAGESEARCH_GATEWAY_SEARCH_ADDRESS"] == "dns:///rel-search:50051"
    encoder = _env(_by(docs, "Deployment")["rel-encoder"])
    assert encoder["IMAGESEARCH_ENCODER_TRITON_GRPC_URL"] == "dns:///rel-triton:8001"


def test_each_service_has_a_disruption_budget_and_an_autoscaler(render: Render) -> None:
    docs = render()
    budgets, scalers = _by(docs, "PodDisruptionBudget"), _by(docs, "HorizontalPodAutoscaler")
    for service in CHART_SERVICES:
        assert budgets[f"rel-{service}"]["spec"]["maxUnavailable"] == 1
        assert scalers[f"rel-{service}"]["spec"]["scaleTargetRef"]["name"] == f"rel-{service}"
        assert "replicas" not in _by(docs, "Deployment")[f"rel-{service}"]["spec"]  # the HPA owns it


def test_gpu_values_select_the_gpu_configs_and_ask_for_a_gpu(render: Render) -> None:
    cpu = _container(_by(render(), "Deployment")["rel-triton"])
    gpu = _container(_by(render("values-gpu.yaml"), "Deployment")["rel-triton"])
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]
    assert not any(a.startswith("--model-config-name") for a in cpu["command"])
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--model-config-name=onnxruntime_gpu" in gpu["command"]
    for arg in gpu["command"]:  # the named config exists for every model that has GPU configs
        if arg.startswith("--model-config-name="):
            name = arg.split("=", 1)[1]
            assert list((REPO / "triton_models").glob(f"*/configs/{name}.pbtxt"))


@pytest.mark.parametrize("values", [(), ("values-gpu.yaml",)], ids=["default", "gpu"])
def test_rendered_manifests_pass_the_strict_kubernetes_schema(
    render: Render, values: tuple[str, ...]
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="dev extra kubernetes-validate")
    for doc in render(*values):
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)  # raises on any schema error


def test_the_weaviate_values_file_sets_what_the_search_service_relies_on() -> None:
    values = yaml.safe_load((REPO / "deploy" / "helm" / "weaviate-values.yaml").read_text())
    env = values["env"]
    assert env["DEFAULT_VECTORIZER_MODULE"] == "none"
    assert values["image"]["tag"] == "1.39.0"  # the version devstack builds and the tests run against
    assert values["replicas"] >= 3


def test_the_console_reaches_the_gateway_and_is_probed_over_http(render: Render) -> None:
    docs = render(set_values=("console.sessionSecret.name=console-cookie", "console.sessionSecret.key=k"))
    console = _by(docs, "Deployment")["rel-console"]
    container = _container(console)
    env = _env(console)
    assert not _unknown_settings("console", env)
    cls = settings_class("console")
    settings = cls(**{k[len("IMAGESEARCH_CONSOLE_") :].lower(): v for k, v in env.items()})
    gateway_port = _by(docs, "Service")["rel-gateway"]["spec"]["ports"][0]["port"]
    assert settings.gateway_address == f"rel-gateway:{gateway_port}"  # type: ignore[attr-defined]
    [port] = container["ports"]
    assert settings.listen_address == f"0.0.0.0:{port['containerPort']}"  # type: ignore[attr-defined]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
    secret = next(e for e in container["env"] if e["name"] == "IMAGESEARCH_CONSOLE_SESSION_SECRET")
    assert secret["valueFrom"]["secretKeyRef"] == {"name": "console-cookie", "key": "k"}
    assert console["spec"]["replicas"] == 1  # sessions are in the pod
    assert "certs" not in {v["name"] for v in console["spec"]["template"]["spec"]["volumes"]}  # no key in
    assert _by(docs, "Service")["rel-console"]["spec"]["ports"][0]["targetPort"] == "http"


def test_a_restricted_gateway_still_lets_the_console_in_and_the_console_can_be_left_out(
    render: Render,
) -> None:
    peer = "gateway.allowFrom[0].namespaceSelector.matchLabels.team=search"
    rule = _by(render(set_values=(peer,)), "NetworkPolicy")["rel-gateway"]["spec"]["ingress"][0]
    components = [
        p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        for p in rule["from"]
    ]
    assert components == [None, "console"]  # the namespace peer, then the console's pods
    without = render(set_values=(peer, "console.enabled=false"))
    assert not [d for d in without if d["metadata"]["name"] == "rel-console"]
    rule = _by(without, "NetworkPolicy")["rel-gateway"]["spec"]["ingress"][0]
    assert len(rule["from"]) == 1
