"""EnsureChassis checks a unix-socket southbound database before it starts anything: nothing listening is
FAILED_PRECONDITION at once (ovn-controller would have waited for it until the start timed out, and
the fuzz saw DEADLINE_EXCEEDED), an NB in its place is INVALID_ARGUMENT naming sb_remote; neither leaves a
chassis directory or process behind. Against a real agent server and a real NB started by the test; the
agent allows the databases each test names (MERAK_CONTROL_PLANE_ALLOW; test_control_plane_allow has the
refusal)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import grpc
import pytest
from prometheus_client import CollectorRegistry

from merak import ovs
from merak.controlplane import ControlPlaneAllow
from merak.grpcserver import GrpcServer
from merak.v1 import agent_pb2, agent_pb2_grpc
from merak_tools.ovncentral import RunningCentral
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from tests.support import assert_eventually

pytestmark = pytest.mark.root

Stub: TypeAlias = "agent_pb2_grpc.MerakAgentServiceAsyncStub"
# Starts the test's agent, allowing the southbound databases given.
StartAgent: TypeAlias = Callable[..., Awaitable[Stub]]


@pytest.fixture
def root() -> Iterator[Path]:
    """The agent's chassis directory."""
    made = Path(tempfile.mkdtemp(prefix="mk-chr-", dir="/tmp"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
async def agent(root: Path) -> AsyncIterator[StartAgent]:
    started: list[tuple[GrpcServer, AgentServicer, grpc.aio.Channel]] = []

    async def start(*allowed: str) -> Stub:
        servicer = AgentServicer(
            VhostSet.standalone("mk-chr-vhost"),
            chassis_dir=root,
            control_plane=ControlPlaneAllow.parse(",".join(allowed)),
        )
        server = GrpcServer("127.0.0.1:0", [registration(servicer)], CollectorRegistry())
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        started.append((server, servicer, channel))
        return agent_pb2_grpc.MerakAgentServiceStub(channel)

    yield start
    for server, servicer, channel in started:
        await channel.close(None)
        await server.stop(0)
        await servicer.close()  # stops a chassis a test started


async def test_a_southbound_that_does_not_answer_is_refused_at_once(
    agent: StartAgent, root: Path, ovn_nb: RunningCentral
) -> None:
    stub = await agent(f"unix:{root}/none.sock", ovn_nb.nb)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EnsureChassis(
            agent_pb2.EnsureChassisRequest(sb_remote=f"unix:{root}/none.sock"), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # nothing listens there
    assert (caught.value.details() or "").startswith("sb_remote: "), caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # an NB where the SB should be
        await stub.EnsureChassis(agent_pb2.EnsureChassisRequest(sb_remote=ovn_nb.nb), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sb_remote" in (caught.value.details() or ""), caught.value.details()
    assert os.listdir(root) == []  # no chassis was started


def _sbctl(central: RunningCentral, *args: str) -> str:
    done = subprocess.run(
        [ovs.program("ovn-sbctl"), f"--db={central.sb}", *args], check=True, capture_output=True
    )
    return done.stdout.decode().strip()


async def test_a_chassis_of_the_same_name_from_another_live_lab_is_refused(
    agent: StartAgent, root: Path, ovn_central: RunningCentral
) -> None:
    # Two labs' vhosts share names (system-id = the vhost's name): on one central they would take the
    # same chassis record in turns. SB's hostname says whose a chassis is.
    stub = await agent(ovn_central.sb)
    other_lab = Path(tempfile.mkdtemp(prefix="mk-chr-other-", dir="/tmp"))
    try:
        _sbctl(ovn_central, "chassis-add", "mk-chr-vhost", "geneve", "127.0.0.9")
        _sbctl(ovn_central, "set", "Chassis", "mk-chr-vhost", f"hostname={other_lab}")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.EnsureChassis(agent_pb2.EnsureChassisRequest(sb_remote=ovn_central.sb), timeout=30)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"from another lab ({other_lab})" in (caught.value.details() or ""), caught.value.details()
    finally:
        shutil.rmtree(other_lab, ignore_errors=True)
    # That lab gone (its directory too), its record is stale: this chassis takes it over.
    reply = await stub.EnsureChassis(agent_pb2.EnsureChassisRequest(sb_remote=ovn_central.sb), timeout=60)
    assert reply.system_id == "mk-chr-vhost" and reply.started

    def ours() -> bool:
        hostname = _sbctl(ovn_central, "--bare", "--columns=hostname", "find", "Chassis", "name=mk-chr-vhost")
        return hostname == str((root / "0").absolute())

    await assert_eventually(ours, timeout=20, message="the record is this chassis's")
