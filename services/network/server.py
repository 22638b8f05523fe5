"""gRPC servicer of the network service."""

from __future__ import annotations

from typing import Any

import grpc

from merak.errors import Unimplemented
from merak.grpcserver import ServiceRegistration
from merak.v1 import network_pb2, network_pb2_grpc

SERVICE_NAME = "network.MerakNetworkService"
_grpc = network_pb2_grpc


class NetworkServicer(_grpc.MerakNetworkServiceServicer):
    """network.MerakNetworkService."""

    async def NetConfigHandler(
        self, request: network_pb2.InternalNetConfigInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> network_pb2.ReturnNetworkMessage:
        """network.MerakNetworkService/NetConfigHandler."""
        raise Unimplemented("NetConfigHandler is not implemented yet")

    async def AllocatePorts(
        self, request: network_pb2.AllocatePortsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> network_pb2.AllocatePortsReply:
        """network.MerakNetworkService/AllocatePorts."""
        raise Unimplemented("AllocatePorts is not implemented yet")

    async def ReleasePorts(
        self, request: network_pb2.ReleasePortsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> network_pb2.ReleasePortsReply:
        """network.MerakNetworkService/ReleasePorts."""
        raise Unimplemented("ReleasePorts is not implemented yet")


def registration(servicer: NetworkServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: _grpc.add_MerakNetworkServiceServicer_to_server(servicer, server)
    )
