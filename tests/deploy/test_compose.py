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
MERAK = ("scenario", "topology", "network", "compute", "compute-worker", "agent")


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


def test_every_process_of_the_stack_is_there() -> None:
    assert set(compose()["services"]) == {"redis", "temporal", *MERAK}
    images = {service(name)["image"] for name in MERAK}
    builds = {json.dumps(service(name)["build"], sort_keys=True) for name in MERAK}
    assert len(images) == len(builds) == 1, "one image runs every Merak process"
    (build,) = [service("topology")["build"]]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
        ROOT / "deployments" / "docker" / "Dockerfile"
    )
    for name in MERAK:
        assert service(name)["command"] == [name]


def published(name: str) -> dict[int, int]:
    """Container port → host port."""
    result = {}
    for mapping in service(name).get("ports", []):
        host, container = str(mapping).split(":")
        result[int(container)] = int(host)
    return result


def test_ports_are_the_readme_table() -> None:
    for name in ("scenario", "topology", "network", "compute", "agent"):
        env = service(name)["environment"]
        assert int(env["MERAK_GRPC_PORT"]) == GRPC_PORTS[name]
        assert int(env["MERAK_METRICS_PORT"]) == METRICS_PORTS[name]
        rest = {REST_PORT: REST_PORT} if name == "scenario" else {}
        assert published(name) == {
            GRPC_PORTS[name]: GRPC_PORTS[name],
            METRICS_PORTS[name]: METRICS_PORTS[name],
            **rest,
        }
        if rest:
            assert int(env["MERAK_REST_PORT"]) == REST_PORT
    worker = METRICS_PORTS["compute-worker"]
    assert int(service("compute-worker")["environment"]["MERAK_WORKER_METRICS_PORT"]) == worker
    assert published("compute-worker") == {worker: worker}
    assert published("redis") == {6379: REDIS_PORT}
    assert published("temporal") == {TEMPORAL_PORT: TEMPORAL_PORT, TEMPORAL_UI_PORT: TEMPORAL_UI_PORT}


def test_the_services_find_each_other() -> None:
    for name in MERAK:
        env = service(name)["environment"]
        assert not unknown(env), f"{name}: variables no process reads"
        assert env["MERAK_REDIS_URL"] == "redis://redis:6379/0"
        assert env["MERAK_TEMPORAL_ADDRESS"] == f"temporal:{TEMPORAL_PORT}"
    for name in ("compute", "compute-worker", "scenario"):
        assert service(name)["environment"]["MERAK_NETWORK_ADDRESS"] == f"network:{GRPC_PORTS['network']}"
    scenario = service("scenario")["environment"]
    assert scenario["MERAK_TOPOLOGY_ADDRESS"] == f"topology:{GRPC_PORTS['topology']}"
    assert scenario["MERAK_COMPUTE_ADDRESS"] == f"compute:{GRPC_PORTS['compute']}"
    temporal = service("temporal")["command"]
    assert temporal[:2] == ["server", "start-dev"]
    assert temporal[temporal.index("--ip") + 1] == "0.0.0.0"
    assert temporal[temporal.index("--namespace") + 1] == "merak"


def test_dependencies_wait_for_health() -> None:
    services = compose()["services"]
    for name, spec in services.items():
        assert "healthcheck" in spec, f"{name} has no health check"
        for dependency, condition in spec.get("depends_on", {}).items():
            assert dependency in services
            assert condition == {"condition": "service_healthy"}
            assert "healthcheck" in services[dependency]


def test_the_local_backend_and_agents_are_privileged_and_share_the_agents_sockets() -> None:
    assert service("topology")["privileged"] is True
    assert service("agent")["privileged"] is True
    # Agents of emulated hosts serve unix sockets under the topology service's state directory.
    state = service("topology")["environment"]["MERAK_STATE_DIR"]
    for name in ("topology", "compute", "compute-worker"):
        assert f"merak-state:{state}" in service(name)["volumes"]


def health_command(name: str, port: int) -> list[str]:
    """The health check of a service, run by this interpreter against `port` instead of its own."""
    test = service(name)["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "python"
    own = str(METRICS_PORTS["compute-worker"] if name == "compute-worker" else GRPC_PORTS[name])
    return [sys.executable, *[arg.replace(own, str(port)) for arg in test[2:]]]


def run(command: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(command, capture_output=True, timeout=30, check=False)


@pytest.mark.parametrize("name", ["scenario", "topology", "network", "compute", "agent"])
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
