"""gRPC servicer of the network service."""

from __future__ import annotations

from merak.grpcserver import ServiceRegistration
from merak.v1 import network_pb2_grpc

SERVICE_NAME = "network.MerakNetworkService"


class NetworkServicer(network_pb2_grpc.MerakNetworkServiceServicer):
    """network.MerakNetworkService; RPCs not overridden here answer UNIMPLEMENTED."""


def registration(servicer: NetworkServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: network_pb2_grpc.add_MerakNetworkServiceServicer_to_server(servicer, server)
    )
