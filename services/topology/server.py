"""gRPC servicer of the topology service."""

from __future__ import annotations

from typing import Any

import grpc

from merak.errors import Unimplemented
from merak.grpcserver import ServiceRegistration
from merak.v1 import topology_pb2, topology_pb2_grpc

SERVICE_NAME = "topology.MerakTopologyService"
_grpc = topology_pb2_grpc


class TopologyServicer(_grpc.MerakTopologyServiceServicer):
    """topology.MerakTopologyService."""

    async def TopologyHandler(
        self, request: topology_pb2.InternalTopologyInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topology_pb2.ReturnTopologyMessage:
        """topology.MerakTopologyService/TopologyHandler."""
        raise Unimplemented("TopologyHandler is not implemented yet")

    async def TestHandler(
        self, request: topology_pb2.InternalTopologyInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topology_pb2.ReturnTopologyMessage:
        """topology.MerakTopologyService/TestHandler."""
        raise Unimplemented("TestHandler is not implemented yet")


def registration(servicer: TopologyServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: _grpc.add_MerakTopologyServiceServicer_to_server(servicer, server)
    )
