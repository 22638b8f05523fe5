"""An operation number no service knows is INVALID_ARGUMENT naming the field, never an error in the
error message (protobuf's Name() raises on an unknown number: it used to end as INTERNAL)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from merak.errors import InvalidArgument, enum_name
from merak.v1 import agent_pb2, common_pb2, compute_pb2, network_pb2, topology_pb2
from services.agent.server import AgentServicer
from services.agent.vhosts import VhostSet
from services.compute.server import ComputeServicer
from services.network.server import NetworkServicer
from services.topology.server import TopologyServicer

UNKNOWN = cast(common_pb2.OperationType.ValueType, 42)


def test_enum_name() -> None:
    assert enum_name(common_pb2.OperationType, common_pb2.CREATE) == "CREATE"
    assert enum_name(common_pb2.OperationType, UNKNOWN) == "unknown value 42"


async def test_every_handler_refuses_an_unknown_operation() -> None:
    # The managers are never reached: the operation is checked first.
    nothing = cast(Any, None)
    agent = AgentServicer(VhostSet.standalone("vhost-0"))
    calls = [
        ComputeServicer(nothing).ComputeHandler(
            compute_pb2.InternalComputeConfigInfo(operation_type=UNKNOWN), nothing
        ),
        NetworkServicer(nothing).NetConfigHandler(
            network_pb2.InternalNetConfigInfo(operation_type=UNKNOWN), nothing
        ),
        TopologyServicer(nothing).TopologyHandler(
            topology_pb2.InternalTopologyInfo(operation_type=UNKNOWN), nothing
        ),
        agent.PortHandler(agent_pb2.InternalPortConfig(operation_type=UNKNOWN, name="v000"), nothing),
    ]
    try:
        for call in calls:
            with pytest.raises(InvalidArgument) as caught:
                await call
            assert caught.value.field == "operation_type" and "unknown value 42" in caught.value.message
    finally:
        await agent.close()
