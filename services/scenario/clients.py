"""gRPC clients of topology, network, compute and the agents; their errors keep their code and message."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

import grpc

from merak.errors import MerakError
from merak.v1 import (
    agent_pb2_grpc,
    compute_pb2,
    compute_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
)

MAX_MESSAGE_BYTES = 500 * 1024 * 1024  # as Merak's scenario manager
CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
# Codes that mean the service was not reached or did not answer in time: they say which service.
_TRANSPORT_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ServiceError(MerakError):
    """A call to another service failed; carries that service's status code and message unchanged."""

    def __init__(self, service: str, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.service = service
        self.code = code


def service_error(service: str, address: str, exc: grpc.aio.AioRpcError) -> ServiceError:
    """The error a failed call becomes: the callee's INVALID_ARGUMENT etc. reach our caller as they are."""
    code, details = exc.code(), exc.details() or ""
    if code in _TRANSPORT_CODES:
        details = f"{service} service at {address}: {details or code.name}"
    return ServiceError(service, code, details)


def open_channel(address: str) -> grpc.aio.Channel:
    """A plaintext channel with Merak's 500 MiB message limits."""
    return grpc.aio.insecure_channel(address, options=list(CHANNEL_OPTIONS))


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
            return await self.topology_stub.TopologyHandler(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise service_error("topology", self.topology_address, exc) from None

    async def network(self, request: network_pb2.InternalNetConfigInfo) -> network_pb2.ReturnNetworkMessage:
        """network.MerakNetworkService/NetConfigHandler."""
        try:
            return await self.network_stub.NetConfigHandler(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise service_error("network", self.network_address, exc) from None

    async def compute(
        self, request: compute_pb2.InternalComputeConfigInfo
    ) -> compute_pb2.ReturnComputeMessage:
        """compute.MerakComputeService/ComputeHandler."""
        try:
            return await self.compute_stub.ComputeHandler(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise service_error("compute", self.compute_address, exc) from None

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
            raise service_error("compute", self.compute_address, exc) from None
        finally:
            call.cancel()


class AgentChannels:
    """Channels to agents by endpoint, opened on first use and closed together."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self._stubs: dict[str, agent_pb2_grpc.MerakAgentServiceAsyncStub] = {}

    def stub(self, endpoint: str) -> agent_pb2_grpc.MerakAgentServiceAsyncStub:
        """The stub of the agent at `endpoint` ("unix:///…/agent.sock" or "host:port")."""
        stub = self._stubs.get(endpoint)
        if stub is None:
            channel = open_channel(endpoint)
            self._stack.push_async_callback(channel.close, None)
            stub = self._stubs[endpoint] = agent_pb2_grpc.MerakAgentServiceStub(channel)
        return stub

    async def __aenter__(self) -> AgentChannels:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()
