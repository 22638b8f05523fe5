"""gRPC servicer of the topology service."""

from __future__ import annotations

from merak.grpcserver import ServiceRegistration
from merak.v1 import topology_pb2_grpc

SERVICE_NAME = "topology.MerakTopologyService"


class TopologyServicer(topology_pb2_grpc.MerakTopologyServiceServicer):
    """topology.MerakTopologyService; RPCs not overridden here answer UNIMPLEMENTED."""


def registration(servicer: TopologyServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: topology_pb2_grpc.add_MerakTopologyServiceServicer_to_server(servicer, server)
    )
