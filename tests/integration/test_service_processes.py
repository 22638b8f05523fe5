"""Every service runs as `python -m services.<name>`: health, reflection, metrics, clean SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from merak.grpcclient import health_serving_blocking
from tests.support import free_port

SERVICES = {
    "scenario": "scenario.MerakScenarioService",
    "topology": "topology.MerakTopologyService",
    "network": "network.MerakNetworkService",
    "compute": "compute.MerakComputeService",
    "agent": "agent.MerakAgentService",
}


def _list_services(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return {s.name for reply in replies for s in reply.list_services_response.service}


def _wait(check: object, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    import time  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
        assert time.monotonic() < deadline, "not healthy in time"
        time.sleep(0.05)


@pytest.fixture
def service_process(request: pytest.FixtureRequest, redis_url: str) -> Iterator[tuple[str, int, int]]:
    name: str = request.param
    grpc_port, metrics_port = free_port(), free_port()
    # The scenario service also serves Merak's REST API (off its default :3000, which may be taken).
    rest = ["--rest_port", str(free_port())] if name == "scenario" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{name}", "--grpc_port", str(grpc_port),
         "--metrics_port", str(metrics_port), "--host", "127.0.0.1", "--redis_url", redis_url, *rest],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait(lambda: health_serving_blocking(f"127.0.0.1:{grpc_port}"), proc)
        yield name, grpc_port, metrics_port
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        assert '"event": "service_stopped"' in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("service_process", list(SERVICES), indirect=True)
def test_service_serves_health_reflection_metrics(service_process: tuple[str, int, int]) -> None:
    name, grpc_port, metrics_port = service_process
    # An agent also serves Alcor's southbound (its hosts are Alcor Control Agents too).
    also = {"alcor.schema.GoalStateProvisioner"} if name == "agent" else set()
    assert _list_services(f"127.0.0.1:{grpc_port}") == {
        SERVICES[name],
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        *also,
    }
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert "merak_grpc_server_handled_total" in body
    assert 'grpc_method="ServerReflectionInfo"' in body
