"""The docker compose file: valid against the Compose Specification's schema, wired as the local stack is."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import CollectorRegistry

from merak.config import (
    GRPC_PORTS,
    METRICS_PORTS,
    REDIS_PORT,
    REST_PORT,
    TEMPORAL_PORT,
    TEMPORAL_UI_PORT,
)
from merak.metrics import serve_metrics
from tests.deploy.settings_keys import unknown
from tests.support import free_port
from tests.support.plugin import StartServer

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deployments" / "compose" / "docker-compose.yml"
SCHEMA = ROOT / "deployments" / "compose" / "schema" / "compose-spec.json"
MERAK = ("scenario", "topology", "network", "compute", "compute-worker")
# The compose network's gateway: where the topology service (host network) listens for the others.
GATEWAY = "172.29.250.1"
REDIS_ADDRESS = "172.29.250.10"


@cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


def service(name: str) -> dict[str, Any]:
    result: dict[str, Any] = compose()["services"][name]
    return result


def validator() -> jsonschema.Draft7Validator:
    # The schema says draft-07 (without the '#' jsonschema looks for), so the validator is chosen here.
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_file_is_valid_against_the_compose_specification() -> None:
    errors = sorted(validator().iter_errors(compose()), key=str)
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_the_schema_check_catches_a_misspelt_key() -> None:
    broken = json.loads(json.dumps(compose()))
    broken["services"]["topology"]["privilegd"] = True
    assert list(validator().iter_errors(broken))


def test_every_process_of_the_stack_is_there_from_one_image() -> None:
    assert set(compose()["services"]) == {"redis", "temporal", *MERAK}
    # `make images` builds it here (no registry): nothing is pulled, nothing is built by compose.
    assert {spec["image"] for spec in compose()["services"].values()} == {"${MERAK_IMAGE:-merak:dev}"}
    assert all("build" not in spec for spec in compose()["services"].values())
    for name in (*MERAK, "redis", "temporal"):
        assert service(name)["command"] == [name]


def published(name: str) -> dict[int, str]:
    """Container port → host address:port."""
    result = {}
    for mapping in service(name).get("ports", []):
        address, host, container = str(mapping).split(":")
        result[int(container)] = f"{address}:{host}"
    return result


def test_only_what_a_user_calls_is_published_on_loopback() -> None:
    assert published("scenario") == {
        GRPC_PORTS["scenario"]: f"127.0.0.1:{GRPC_PORTS['scenario']}",
        REST_PORT: f"127.0.0.1:{REST_PORT}",
    }
    assert published("temporal") == {TEMPORAL_UI_PORT: f"127.0.0.1:{TEMPORAL_UI_PORT}"}
    for name in ("redis", "network", "compute", "compute-worker", "topology"):
        assert published(name) == {}, name


def test_ports_are_the_readme_table() -> None:
    for name in ("scenario", "topology", "network", "compute"):
        env = service(name)["environment"]
        assert int(env["MERAK_GRPC_PORT"]) == GRPC_PORTS[name]
        assert int(env["MERAK_METRICS_PORT"]) == METRICS_PORTS[name]
    assert int(service("scenario")["environment"]["MERAK_REST_PORT"]) == REST_PORT
    worker = METRICS_PORTS["compute-worker"]
    assert int(service("compute-worker")["environment"]["MERAK_WORKER_METRICS_PORT"]) == worker


def test_the_services_find_each_other() -> None:
    for name in MERAK:
        env = service(name)["environment"]
        assert not unknown(env), f"{name}: variables no process reads"
        assert env["MERAK_REDIS_URL"] == f"redis://{REDIS_ADDRESS}:6379/0"
        assert env["MERAK_TEMPORAL_ADDRESS"] == f"temporal:{TEMPORAL_PORT}"
        assert env["MERAK_TOPOLOGY_ADDRESS"] == f"{GATEWAY}:{GRPC_PORTS['topology']}"
        assert env["MERAK_NETWORK_ADDRESS"] == f"network:{GRPC_PORTS['network']}"
        assert env["MERAK_COMPUTE_ADDRESS"] == f"compute:{GRPC_PORTS['compute']}"
    assert service("redis")["networks"]["merak"]["ipv4_address"] == REDIS_ADDRESS
    (subnet,) = compose()["networks"]["merak"]["ipam"]["config"]
    assert subnet["gateway"] == GATEWAY and REDIS_ADDRESS.startswith(subnet["subnet"].rsplit(".", 1)[0])
    assert service("topology")["environment"]["MERAK_HOST"] == GATEWAY
    assert REDIS_PORT != 6379  # the stack's own Redis port is not the container's


def test_dependencies_wait_for_health() -> None:
    services = compose()["services"]
    for name, spec in services.items():
        assert "healthcheck" in spec, f"{name} has no health check"
        for dependency, condition in spec.get("depends_on", {}).items():
            assert dependency in services
            assert condition == {"condition": "service_healthy"}
            assert "healthcheck" in services[dependency]


def test_only_the_topology_service_gets_the_host_and_only_the_capabilities_it_needs() -> None:
    topology = service("topology")
    assert (topology["network_mode"], topology["pid"], topology["user"]) == ("host", "host", "root")
    assert "privileged" not in topology and "SYS_ADMIN" in topology["cap_add"]
    assert "networks" not in topology
    for name, spec in compose()["services"].items():
        assert "privileged" not in spec, name
        if name != "topology":
            assert "network_mode" not in spec and "pid" not in spec and "cap_add" not in spec, name
    for name in ("network", "compute", "compute-worker", "scenario", "redis", "temporal"):
        assert "user" not in service(name), name  # the image's user, uid 10001
    # Those reach the agents' unix sockets through the image's group.
    assert topology["environment"]["MERAK_SOCKET_GROUP"] == "10001"
    # Agents of emulated hosts serve unix sockets under the topology service's state directory.
    state = topology["environment"]["MERAK_STATE_DIR"]
    for name in ("topology", "compute-worker", "scenario"):
        assert f"merak-state:{state}" in service(name)["volumes"]


def health_command(name: str, port: int) -> list[str]:
    """The health check of a service, run by this interpreter against `port` on loopback instead of its
    own."""
    test = service(name)["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    own = str(METRICS_PORTS["compute-worker"] if name == "compute-worker" else GRPC_PORTS[name])
    return [sys.executable, *[arg.replace(own, str(port)).replace(GATEWAY, "127.0.0.1") for arg in test[2:]]]


def run(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, capture_output=True, timeout=30, check=False)


@pytest.mark.parametrize("name", ["scenario", "topology", "network", "compute"])
async def test_the_grpc_health_one_liners_work(name: str, grpc_server: StartServer) -> None:
    address = await grpc_server([])
    port = int(address.rsplit(":", 1)[1])
    # The checks run in their own processes while this event loop serves the health service.
    up = await asyncio.to_thread(run, health_command(name, port))
    assert up.returncode == 0, up.stderr
    down = await asyncio.to_thread(run, health_command(name, free_port()))
    assert down.returncode == 1, down.stderr


def test_the_worker_health_check_reads_its_metrics() -> None:
    port = free_port()
    metrics = serve_metrics(port, "127.0.0.1", CollectorRegistry())
    try:
        assert run(health_command("compute-worker", port)).returncode == 0
    finally:
        metrics.stop()
    assert run(health_command("compute-worker", free_port())).returncode == 1
