"""gRPC servicer of the topology service: Merak's TopologyHandler over the topology manager."""

from __future__ import annotations

from typing import Any

import grpc

from merak.errors import InvalidArgument, Unimplemented, enum_name
from merak.grpcserver import ServiceRegistration
from merak.logs import get_logger
from merak.skips import Skips
from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc
from services.topology.manager import TopologyManager

log = get_logger(__name__)

SERVICE_NAME = "topology.MerakTopologyService"


class TopologyServicer(topology_pb2_grpc.MerakTopologyServiceServicer):
    """topology.MerakTopologyService."""

    def __init__(self, manager: TopologyManager) -> None:
        self.manager = manager

    async def TopologyHandler(
        self, request: topology_pb2.InternalTopologyInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topology_pb2.ReturnTopologyMessage:
        """CREATE / INFO / DELETE / UPDATE of a topology."""
        op = request.operation_type
        config = request.config
        if op in (common_pb2.CREATE, common_pb2.UPDATE):
            skips = Skips()
            if op == common_pb2.CREATE:
                reply = await self.manager.create(config, skips)
                reply.return_message = "DEPLOY Success. " + reply.return_message.removeprefix(
                    "CHECK success. "
                )
            else:
                reply = await self.manager.update(config, skips)
            if skips:
                reply.warnings.extend(skips.warnings)
                log.warning(
                    "topology_config_skipped", topology_id=config.topology_id, warnings=skips.warnings
                )
            return reply
        if op == common_pb2.INFO:
            return await self.manager.info(config.topology_id)
        if op == common_pb2.DELETE:
            return await self.manager.delete(config.topology_id)
        raise InvalidArgument(
            "operation_type", f"{enum_name(common_pb2.OperationType, op)} is not a topology operation; "
            "use CREATE, INFO, DELETE or UPDATE",
        )  # fmt: skip

    async def TestHandler(
        self, request: topology_pb2.InternalTopologyInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topology_pb2.ReturnTopologyMessage:
        """Declared by Merak, never implemented there; tests run from the scenario service."""
        raise Unimplemented(
            "TestHandler is not implemented; run connectivity tests through the scenario service"
        )

    async def ListTopologies(
        self, request: topology_pb2.ListTopologiesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topology_pb2.ListTopologiesReply:
        """Every topology this service manages."""
        return await self.manager.list()

    async def SetFaults(
        self, request: topology_pb2.SetFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topology_pb2.FaultsReply:
        """Impair the lab's links: exactly what the request lists."""
        return await self.manager.set_faults(request)

    async def ClearFaults(
        self, request: topology_pb2.ClearFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topology_pb2.FaultsReply:
        """Heal every link of the lab."""
        return await self.manager.set_faults(topology_pb2.SetFaultsRequest(topology_id=request.topology_id))

    async def ListFaults(
        self, request: topology_pb2.ListFaultsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topology_pb2.FaultsReply:
        """The impairments the lab suffers now."""
        return await self.manager.list_faults(request.topology_id)

    async def GetProcessStats(
        self, request: topology_pb2.ProcessStatsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> topology_pb2.ProcessStatsReply:
        """CPU and memory of the lab's control-plane processes over time."""
        return await self.manager.process_stats(request.topology_id, request.since)


def registration(servicer: TopologyServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    add = topology_pb2_grpc.add_MerakTopologyServiceServicer_to_server
    return ServiceRegistration(SERVICE_NAME, lambda server: add(servicer, server))
