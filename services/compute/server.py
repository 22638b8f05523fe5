"""gRPC servicer of the compute service: Merak's ComputeHandler and the progress stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from merak.errors import InvalidArgument, enum_name
from merak.grpcserver import ServiceRegistration
from merak.ids import check_id
from merak.v1 import common_pb2, compute_pb2, compute_pb2_grpc
from services.compute.manager import ComputeManager

SERVICE_NAME = "compute.MerakComputeService"


class ComputeServicer(compute_pb2_grpc.MerakComputeServiceServicer):
    """compute.MerakComputeService."""

    def __init__(self, manager: ComputeManager) -> None:
        self.manager = manager

    async def ComputeHandler(
        self, request: compute_pb2.InternalComputeConfigInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> compute_pb2.ReturnComputeMessage:
        """CREATE / INFO / DELETE / UPDATE of the VMs of a compute config."""
        op, config = request.operation_type, request.config
        if op == common_pb2.CREATE:
            return await self.manager.create(config)
        if op == common_pb2.INFO:
            return await self.manager.info(config.compute_config_id)
        if op == common_pb2.DELETE:
            return await self.manager.delete(config.compute_config_id)
        if op == common_pb2.UPDATE:
            return await self.manager.update(config)
        raise InvalidArgument(
            "operation_type", f"{enum_name(common_pb2.OperationType, op)} is not a compute operation"
        )

    async def WatchProgress(
        self, request: compute_pb2.WatchProgressRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[compute_pb2.ComputeProgress]:
        """Progress pushed on every change until the operation ends."""
        check_id("compute_config_id", request.compute_config_id)
        async for progress in self.manager.watch(request.compute_config_id):
            yield progress

    async def GetResults(
        self, request: compute_pb2.GetResultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> compute_pb2.ComputeResults:
        """The control plane's results for this compute config's VMs."""
        check_id("compute_config_id", request.compute_config_id)
        return await self.manager.results(request.compute_config_id)


def registration(servicer: ComputeServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    add = compute_pb2_grpc.add_MerakComputeServiceServicer_to_server
    return ServiceRegistration(SERVICE_NAME, lambda server: add(servicer, server))
