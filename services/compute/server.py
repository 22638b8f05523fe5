"""gRPC servicer of the compute service."""

from __future__ import annotations

from merak.grpcserver import ServiceRegistration
from merak.v1 import compute_pb2_grpc

SERVICE_NAME = "compute.MerakComputeService"


class ComputeServicer(compute_pb2_grpc.MerakComputeServiceServicer):
    """compute.MerakComputeService; RPCs not overridden here answer UNIMPLEMENTED."""


def registration(servicer: ComputeServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: compute_pb2_grpc.add_MerakComputeServiceServicer_to_server(servicer, server)
    )
