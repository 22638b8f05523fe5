"""gRPC servicer of the agent service."""

from __future__ import annotations

from merak.grpcserver import ServiceRegistration
from merak.v1 import agent_pb2_grpc

SERVICE_NAME = "agent.MerakAgentService"


class AgentServicer(agent_pb2_grpc.MerakAgentServiceServicer):
    """agent.MerakAgentService; RPCs not overridden here answer UNIMPLEMENTED."""


def registration(servicer: AgentServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: agent_pb2_grpc.add_MerakAgentServiceServicer_to_server(servicer, server)
    )
