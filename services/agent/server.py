"""gRPC servicer of the agent service."""

from __future__ import annotations

from typing import Any

import grpc

from merak.errors import Unimplemented
from merak.grpcserver import ServiceRegistration
from merak.v1 import agent_pb2, agent_pb2_grpc
from services.agent.vhosts import VhostSet

SERVICE_NAME = "agent.MerakAgentService"
_grpc = agent_pb2_grpc


class AgentServicer(_grpc.MerakAgentServiceServicer):
    """agent.MerakAgentService."""

    def __init__(self, vhosts: VhostSet) -> None:
        self.vhosts = vhosts

    async def PortHandler(
        self, request: agent_pb2.InternalPortConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnInfo:
        """agent.MerakAgentService/PortHandler."""
        raise Unimplemented("PortHandler is not implemented yet")

    async def TestHandler(
        self, request: agent_pb2.InternalTestTargetConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnTestInfo:
        """agent.MerakAgentService/TestHandler."""
        raise Unimplemented("TestHandler is not implemented yet")

    async def BulkPortAdd(
        self, request: agent_pb2.BulkPorts, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnInfo:
        """agent.MerakAgentService/BulkPortAdd."""
        raise Unimplemented("BulkPortAdd is not implemented yet")


def registration(servicer: AgentServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: _grpc.add_MerakAgentServiceServicer_to_server(servicer, server)
    )
