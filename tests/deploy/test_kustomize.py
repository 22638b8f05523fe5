"""Every kustomize overlay renders (`kubectl kustomize`) to objects valid against the Kubernetes schemas."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from merak.config import GRPC_PORTS, METRICS_PORTS
from merak_tools import images
from tests.deploy.settings_keys import unknown

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deployments" / "kubernetes"
OVERLAYS = ("base", "dev", "scale", "alcor")
KUBERNETES_VERSION = "1.32"
MERAK_SERVICES = ("scenario", "topology", "network", "compute")
MERAK_DEPLOYMENTS = (*MERAK_SERVICES, "compute-worker")

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl is not installed (it carries kustomize: `kubectl kustomize`)",
)


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl kustomize` makes of an overlay."""
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZE / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def env_of(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    (config,) = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("merak-env")
    ]
    return dict(config["data"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    objects = render(overlay)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_selects_pods_and_names_their_ports(overlay: str) -> None:
    objects = render(overlay)
    deployments = of_kind(objects, "Deployment")
    services = of_kind(objects, "Service")
    # scenario-manager-service: Merak's name for the REST API, where Merak's teste2e looks for it.
    assert set(services) == {*MERAK_SERVICES, "redis", "temporal", "scenario-manager-service"}
    assert services["scenario-manager-service"]["spec"]["ports"][0]["nodePort"] == 32000
    for name, service in services.items():
        selector = service["spec"]["selector"]
        matching = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            and d["metadata"]["namespace"] == service["metadata"]["namespace"]
        ]
        # Merak's sdn-controller Service selected labels no pod had: a Service without endpoints.
        assert len(matching) == 1, f"service {name} selects {len(matching)} deployments"
        ports = {p["name"] for c in containers(matching[0]) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (
                f"service {name} targets {port['targetPort']}, pod has {ports}"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_select_their_own_pods(overlay: str) -> None:
    for name, deployment in of_kind(render(overlay), "Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items(), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_merak_processes_get_their_ports_config_and_scrape_annotations(overlay: str) -> None:
    objects = render(overlay)
    deployments = of_kind(objects, "Deployment")
    config_maps = set(of_kind(objects, "ConfigMap"))
    assert set(MERAK_DEPLOYMENTS) <= set(deployments)
    for name in MERAK_DEPLOYMENTS:
        deployment = deployments[name]
        (container,) = containers(deployment)
        assert container["args"] == [name], "the image's entrypoint takes the process name"
        assert {ref["configMapRef"]["name"] for ref in container["envFrom"]} <= config_maps
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ports["metrics"]
        metrics = METRICS_PORTS[name]
        assert ports["metrics"] == metrics
        if name in GRPC_PORTS:
            assert ports["grpc"] == GRPC_PORTS[name]
            assert container["readinessProbe"]["grpc"]["port"] == GRPC_PORTS[name]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert not unknown(env), f"{name}: variables no process reads"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_config_wires_the_services_together(overlay: str) -> None:
    objects = render(overlay)
    env = env_of(objects)
    assert not unknown(env), "variables no process reads"
    services = of_kind(objects, "Service")

    def port_of(service: str) -> int:
        return int(
            next(p["port"] for p in services[service]["spec"]["ports"] if p["name"] in ("grpc", "redis"))
        )

    assert env["MERAK_REDIS_URL"] == f"redis://redis:{port_of('redis')}/0"
    assert env["MERAK_TEMPORAL_ADDRESS"] == f"temporal:{port_of('temporal')}"
    for peer in ("topology", "network", "compute"):
        assert env[f"MERAK_{peer.upper()}_ADDRESS"] == f"{peer}:{port_of(peer)}"
    # The pods the topology service creates run the image the services run.
    (image,) = {c["image"] for c in containers(of_kind(objects, "Deployment")["topology"])}
    assert env["MERAK_KUBERNETES_VHOST_IMAGE"] == image


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_topology_service_has_least_privilege(overlay: str) -> None:
    objects = render(overlay)
    (role,) = of_kind(objects, "ClusterRole").values()
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("", "namespaces"): {"get", "list", "create", "delete"},
        ("", "pods"): {"get", "list", "watch", "create", "delete"},
        ("", "nodes"): {"get", "list"},
        ("networkop.co.uk", "topologies"): {"get", "list", "create", "delete"},
    }
    (binding,) = of_kind(objects, "ClusterRoleBinding").values()
    assert binding["roleRef"]["name"] == role["metadata"]["name"] != "cluster-admin"
    (subject,) = binding["subjects"]
    accounts = of_kind(objects, "ServiceAccount")
    assert subject["name"] in accounts
    assert subject["namespace"] == accounts[subject["name"]]["metadata"]["namespace"] == "merak"
    deployments = of_kind(objects, "Deployment")
    assert deployments["topology"]["spec"]["template"]["spec"]["serviceAccountName"] == subject["name"]
    # Nobody else gets a token: no other process talks to the API server.
    others = [d for name, d in deployments.items() if name != "topology"]
    assert all(d["spec"]["template"]["spec"].get("automountServiceAccountToken") is False for d in others)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_the_merak_namespace(overlay: str) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in render(overlay):
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == "merak", f"{obj['kind']}/{obj['metadata']['name']}"


def test_dev_runs_one_replica_of_local_images() -> None:
    objects = render("dev")
    deployments = of_kind(objects, "Deployment")
    assert {d["spec"]["replicas"] for d in deployments.values()} == {1}
    for name in MERAK_DEPLOYMENTS:
        (container,) = containers(deployments[name])
        assert container["image"] == images.IMAGE  # what `make images` builds
        assert container["imagePullPolicy"] == "IfNotPresent"
    assert env_of(objects)["MERAK_KUBERNETES_IMAGE_PULL_POLICY"] == "IfNotPresent"


def test_scale_runs_more_and_bigger_workers() -> None:
    base = of_kind(render("base"), "Deployment")["compute-worker"]
    scale = of_kind(render("scale"), "Deployment")["compute-worker"]
    assert scale["spec"]["replicas"] > base["spec"]["replicas"]
    assert containers(scale)[0]["resources"]["requests"]["cpu"] == "2"
    assert scale["spec"]["template"]["spec"]["topologySpreadConstraints"], "workers spread over the nodes"
    assert int(env_of(render("scale"))["MERAK_KUBERNETES_MAX_VHOSTS"]) > 5_000


def test_alcor_points_the_agents_and_the_network_service_at_alcor() -> None:
    env = env_of(render("alcor"))
    agent_env = json.loads(env["MERAK_KUBERNETES_AGENT_ENV"])
    assert agent_env["MERAK_ALCOR_URL"].endswith(":30006")
    assert env["MERAK_ALCOR_NODE_PORT"] == "30007"
    assert not unknown(agent_env)
