"""`merak up / status / down` on this machine, on ports of its own beside any running stack."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from merak import netns
from merak.procs import alive
from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc
from merak_tools.localstack import (
    SERVICES,
    LocalStack,
    StackError,
    StackSettings,
    code_fingerprint,
    port_in_use,
)
from services.topology.models import TopologySpec
from tests.support import free_port, stack_port_offset, unique_name

pytestmark = pytest.mark.slow


@pytest.fixture
def settings() -> Iterator[StackSettings]:
    # An offset far from the defaults, from other test runs and from the e2e stack (12000-13990) keeps
    # this stack to itself; a short state directory keeps agent socket paths under the 108-byte limit.
    offset = stack_port_offset(10000)
    state = Path(tempfile.mkdtemp(prefix="mks", dir="/tmp"))
    yield StackSettings(
        state_dir=state,
        port_offset=offset,
        redis_port=free_port(),
        temporal_port=free_port(),
        temporal_ui_port=free_port(),
        compute_workers=2,  # more than one worker process, each with its own metrics port
    )
    shutil.rmtree(state, ignore_errors=True)


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
    assert [s.component.name for s in states] == [
        "redis", "temporal", *SERVICES, *settings.worker_names, "supervisor"
    ]  # fmt: skip
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

    # The code changed under the running stack: its services start again; Redis and Temporal stay.
    stack.code_file.write_text("other code\n")
    restarted = {s.component.name: s.pid for s in stack.up()}
    python = [*SERVICES, *settings.worker_names, "supervisor"]
    assert all(restarted[name] not in (None, pids[name]) for name in python), (pids, restarted)
    assert (restarted["redis"], restarted["temporal"]) == (pids["redis"], pids["temporal"])
    assert stack.code_file.read_text().strip() == code_fingerprint()
    pids = restarted

    # A component that dies is started again by the supervisor (a worker, then Redis itself).
    for name in ("compute-worker", "redis"):
        victim = next(c for c in stack.components if c.name == name)
        os.kill(pids[name] or 0, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (stack.running_pid(victim) in (None, pids[name])) or not victim.health():
            assert time.monotonic() < deadline, f"{name} not restarted"
            time.sleep(0.1)
        pids[name] = stack.running_pid(victim)

    # A running lab is torn down by `down`: no agent and no namespace outlives the stack.
    topology_id = unique_name("stack-")
    with grpc.insecure_channel(f"127.0.0.1:{settings.grpc_port('topology')}") as channel:
        stub = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        config = topology_pb2.InternalTopologyConfiguration(
            topology_id=topology_id, topology_type=topology_pb2.TREE, number_of_vhosts=2,
            vhost_per_rack=2, ports_per_vswitch=2, data_plane_cidr="10.203.0.0/24",
        )  # fmt: skip
        stub.TopologyHandler(
            topology_pb2.InternalTopologyInfo(operation_type=common_pb2.CREATE, config=config)
        )
        listed = stub.ListTopologies(topology_pb2.ListTopologiesRequest()).topologies
        assert [t.topology_id for t in listed] == [topology_id]
        info = topology_pb2.InternalTopologyInfo(operation_type=common_pb2.INFO, config=config)
        deadline = time.monotonic() + 60
        while not all(n.status == common_pb2.READY for n in stub.TopologyHandler(info).compute_nodes):
            assert time.monotonic() < deadline, "lab not READY"
            time.sleep(0.1)
    # Safe by default: every socket the stack and its lab's agents listen on is on loopback.
    lab_agents = subprocess.run(
        ["pgrep", "-f", f"services.agent .*{settings.state_dir}"], capture_output=True, text=True, check=False
    ).stdout.split()
    ours = {str(pid) for pid in pids.values() if pid} | set(lab_agents)
    assert len(lab_agents) == 2
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    exposed = [
        line.split()[3]
        for line in listening.splitlines()
        if any(f"pid={pid}," in line for pid in ours)
        and not line.split()[3].startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:"))
    ]
    assert exposed == []
    assert any(f"pid={pid}," in line for pid in lab_agents for line in listening.splitlines())  # metrics
    short = TopologySpec(topology_id=topology_id, name="", type=0, number_of_vhosts=1).short_id
    assert netns.list_names(f"mk-{short}-")
    assert stack.teardown_labs() == [topology_id]
    assert netns.list_names(f"mk-{short}-") == []
    agents = subprocess.run(["pgrep", "-f", "services.agent"], capture_output=True, text=True, check=False)
    assert str(settings.state_dir) not in agents.stdout

    stopped = stack.down()
    assert sorted(stopped) == sorted(["redis", "temporal", *SERVICES, *settings.worker_names, "supervisor"])
    assert not any(alive(pid) for pid in pids.values() if pid)
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


def test_a_port_left_in_time_wait_by_a_client_is_not_taken() -> None:
    # The stack's ports lie in the kernel's ephemeral range: a finished client connection that used
    # one as its source port sits in TIME-WAIT, a trial bind fails, yet a server can listen there.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.socket() as client:
            client.connect(server.getsockname())
            source_port = client.getsockname()[1]
            accepted, _ = server.accept()
            client.close()  # the side that closes first keeps the TIME-WAIT
            accepted.close()
    assert not port_in_use(source_port)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert port_in_use(listener.getsockname()[1])
