"""gRPC servicer of the compute service."""

from __future__ import annotations

from typing import Any

import grpc

from merak.errors import Unimplemented
from merak.grpcserver import ServiceRegistration
from merak.v1 import compute_pb2, compute_pb2_grpc

SERVICE_NAME = "compute.MerakComputeService"
_grpc = compute_pb2_grpc


class ComputeServicer(_grpc.MerakComputeServiceServicer):
    """compute.MerakComputeService."""

    async def ComputeHandler(
        self, request: compute_pb2.InternalComputeConfigInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> compute_pb2.ReturnComputeMessage:
        """compute.MerakComputeService/ComputeHandler."""
        raise Unimplemented("ComputeHandler is not implemented yet")


def registration(servicer: ComputeServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: _grpc.add_MerakComputeServiceServicer_to_server(servicer, server)
    )
