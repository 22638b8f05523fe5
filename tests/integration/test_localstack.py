"""`merak up / status / down` on this machine, on ports of its own beside any running stack."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from merak.localstack import SERVICES, LocalStack, StackError, StackSettings, _alive
from merak.testing import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path: Path) -> StackSettings:
    # An offset far from the defaults and from other test runs keeps this stack to itself.
    offset = 10000 + (os.getpid() % 500) * 10
    return StackSettings(
        state_dir=tmp_path / "state",
        port_offset=offset,
        redis_port=free_port(),
        temporal_port=free_port(),
        temporal_ui_port=free_port(),
    )


@pytest.fixture
def stack(settings: StackSettings) -> Iterator[LocalStack]:
    stack = LocalStack(settings, out=lambda _line: None)
    try:
        yield stack
    finally:
        stack.down()


def _reflected(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        return {s.name for reply in replies for s in reply.list_services_response.service}


def test_up_twice_status_down(stack: LocalStack, settings: StackSettings) -> None:
    states = stack.up()
    assert [s.component.name for s in states] == ["redis", "temporal", *SERVICES]
    assert all(s.healthy for s in states), [(s.component.name, s.running) for s in states]
    pids = {s.component.name: s.pid for s in states}
    for name in SERVICES:
        names = _reflected(f"127.0.0.1:{settings.grpc_port(name)}")
        assert "grpc.health.v1.Health" in names
        assert "grpc.reflection.v1alpha.ServerReflection" in names
        assert any(n.endswith(f"{name}.Merak{name.capitalize()}Service") for n in names), names
    assert (settings.state_dir / "redis" / "appendonlydir").exists()  # AOF on, in the state directory
    assert (settings.state_dir / "temporal" / "temporal.db").exists()

    again = stack.up()  # harmless: nothing restarted
    assert {s.component.name: s.pid for s in again} == pids

    stopped = stack.down()
    assert sorted(stopped) == sorted(["redis", "temporal", *SERVICES])
    assert not any(_alive(pid) for pid in pids.values() if pid)
    assert not any(s.running for s in stack.status())
    assert stack.down() == []


def test_port_taken_says_which_and_starts_nothing(stack: LocalStack, settings: StackSettings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("0.0.0.0", settings.grpc_port("network")))
        squatter.listen()
        with pytest.raises(StackError, match=rf"port {settings.grpc_port('network')} \(network grpc\)"):
            stack.up()
    assert not any(s.running for s in stack.status())
    assert not list((settings.state_dir / "run").glob("*.pid"))
