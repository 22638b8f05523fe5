"""EnsureChassis checks a unix-socket southbound database before it starts anything: nothing answering is
UNAVAILABLE at once (ovn-controller would have waited for it until the start timed out, and the fuzz
saw DEADLINE_EXCEEDED), an NB in its place is INVALID_ARGUMENT naming sb_remote; neither leaves a
chassis directory or process behind. Against a real agent server and a real NB started by the test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeAlias

import grpc
import pytest
from prometheus_client import CollectorRegistry

from merak.grpcserver import GrpcServer
from merak.v1 import agent_pb2, agent_pb2_grpc
from merak_tools.ovncentral import RunningCentral
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet

pytestmark = pytest.mark.root

Stub: TypeAlias = "agent_pb2_grpc.MerakAgentServiceAsyncStub"


@pytest.fixture
async def agent() -> AsyncIterator[tuple[Stub, Path]]:
    root = Path(tempfile.mkdtemp(prefix="mk-chr-", dir="/tmp"))
    servicer = AgentServicer(VhostSet.standalone(), chassis_dir=root)
    server = GrpcServer("127.0.0.1:0", [registration(servicer)], CollectorRegistry())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield agent_pb2_grpc.MerakAgentServiceStub(channel), root
    finally:
        await server.stop(0)
        shutil.rmtree(root, ignore_errors=True)


async def test_a_southbound_that_does_not_answer_is_refused_at_once(
    agent: tuple[Stub, Path], ovn_nb: RunningCentral
) -> None:
    stub, root = agent
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.EnsureChassis(
            agent_pb2.EnsureChassisRequest(sb_remote=f"unix:{root}/none.sock"), timeout=10
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (caught.value.details() or "").startswith("sb_remote: "), caught.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as caught:  # an NB where the SB should be
        await stub.EnsureChassis(agent_pb2.EnsureChassisRequest(sb_remote=ovn_nb.nb), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sb_remote" in (caught.value.details() or ""), caught.value.details()
    assert list(root.iterdir()) == []  # no chassis was started
