"""gRPC clients of topology, network and compute; their errors keep their code and message, after the
service's name (merak.errors.from_rpc_error: a transport failure is UNAVAILABLE).

Their handlers are idempotent (a repeated CREATE finds what the first made), so a call that fails
UNAVAILABLE (the service or its Redis restarting) is made again within the call's deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from merak.errors import from_rpc_error
from merak.grpcclient import retry_unavailable
from merak.v1 import (
    compute_pb2,
    compute_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
)


@dataclass
class ServiceClients:
    """Stubs of the three services, their addresses and the deadline of each call."""

    topology_stub: topology_pb2_grpc.MerakTopologyServiceAsyncStub
    network_stub: network_pb2_grpc.MerakNetworkServiceAsyncStub
    compute_stub: compute_pb2_grpc.MerakComputeServiceAsyncStub
    timeout: float
    topology_address: str
    network_address: str
    compute_address: str

    async def topology(
        self, request: topology_pb2.InternalTopologyInfo
    ) -> topology_pb2.ReturnTopologyMessage:
        """topology.MerakTopologyService/TopologyHandler."""
        try:
            return await retry_unavailable(
                lambda left: self.topology_stub.TopologyHandler(request, timeout=left), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "topology service", self.topology_address) from None

    async def topology_faults(self, method: str, request: Message) -> topology_pb2.FaultsReply:
        """topology.MerakTopologyService/SetFaults, ClearFaults or ListFaults (each idempotent)."""
        call = getattr(self.topology_stub, method)
        try:
            reply: topology_pb2.FaultsReply = await retry_unavailable(
                lambda left: call(request, timeout=left), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "topology service", self.topology_address) from None
        return reply

    async def topology_process_stats(self, topology_id: str, since: float) -> topology_pb2.ProcessStatsReply:
        """topology.MerakTopologyService/GetProcessStats: a few seconds at most (results must not wait)."""
        request = topology_pb2.ProcessStatsRequest(topology_id=topology_id, since=since)
        try:
            reply: topology_pb2.ProcessStatsReply = await self.topology_stub.GetProcessStats(
                request, timeout=min(5.0, self.timeout)
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "topology service", self.topology_address) from None
        return reply

    async def network(self, request: network_pb2.InternalNetConfigInfo) -> network_pb2.ReturnNetworkMessage:
        """network.MerakNetworkService/NetConfigHandler."""
        try:
            return await retry_unavailable(
                lambda left: self.network_stub.NetConfigHandler(request, timeout=left), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "network service", self.network_address) from None

    async def compute(
        self, request: compute_pb2.InternalComputeConfigInfo
    ) -> compute_pb2.ReturnComputeMessage:
        """compute.MerakComputeService/ComputeHandler."""
        try:
            return await retry_unavailable(
                lambda left: self.compute_stub.ComputeHandler(request, timeout=left), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "compute service", self.compute_address) from None

    async def compute_results(self, compute_config_id: str) -> compute_pb2.ComputeResults:
        """compute.MerakComputeService/GetResults."""
        request = compute_pb2.GetResultsRequest(compute_config_id=compute_config_id)
        try:
            return await retry_unavailable(
                lambda left: self.compute_stub.GetResults(request, timeout=left), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "compute service", self.compute_address) from None

    async def compute_progress(
        self, compute_config_id: str, timeout: float | None
    ) -> AsyncIterator[compute_pb2.ComputeProgress]:
        """compute.MerakComputeService/WatchProgress, until the operation ends."""
        call = self.compute_stub.WatchProgress(
            compute_pb2.WatchProgressRequest(compute_config_id=compute_config_id), timeout=timeout
        )
        try:
            async for progress in call:
                yield progress
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "compute service", self.compute_address) from None
        finally:
            call.cancel()
