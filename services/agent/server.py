"""gRPC servicer of the agent: the batch API, Merak's PortHandler / TestHandler / BulkPortAdd, each
handed to the part of the agent that serves it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from merak.controlplane import ControlPlaneAllow
from merak.grpcserver import ServiceRegistration
from merak.host import HostTuner
from merak.v1 import agent_pb2, agent_pb2_grpc
from services.agent.alcor import AlcorPorts
from services.agent.goalstate.host import HostProvisioners
from services.agent.metrics import AgentMetrics
from services.agent.overlay import OverlayOperations
from services.agent.ovn import ChassisSet
from services.agent.pings import MAX_PINGS_IN_FLIGHT, PingOperations
from services.agent.planes import PlaneRegistry, known_planes
from services.agent.ports import PortOperations
from services.agent.vhost_planes import VhostPlanes
from services.agent.vhosts import VhostSet
from services.agent.vms import VmOperations

SERVICE_NAME = "agent.MerakAgentService"


class AgentServicer(agent_pb2_grpc.MerakAgentServiceServicer):
    """agent.MerakAgentService for the vhosts of this agent."""

    def __init__(
        self,
        vhosts: VhostSet,
        *,
        alcor: AlcorPorts | None = None,
        workers: int = 4,
        host: HostTuner | None = None,
        planes: PlaneRegistry | None = None,
        metrics: AgentMetrics | None = None,
        management_netns: int | None = None,
        chassis_dir: Path | None = None,
        max_pings: int = MAX_PINGS_IN_FLIGHT,
        control_plane: ControlPlaneAllow | None = None,
        goalstate_marker: Path | None = None,
    ) -> None:
        self.vhosts = vhosts
        # The process's metrics; a servicer built on the side (a test) gets a registry of its own.
        self.metrics = metrics if metrics is not None else AgentMetrics.create(CollectorRegistry())
        # Resolved up front: an unknown dataplane fails the agent at start, not its first request.
        kind = (planes if planes is not None else known_planes()).get(vhosts.dataplane)
        self._planes = VhostPlanes(vhosts, kind, self.metrics, workers=workers, host=host)
        # Where the vhosts' OVN chassis keep their files (a test's servicer: a directory of its own).
        root = chassis_dir or Path(tempfile.gettempdir()) / f"merak-chassis-{os.getpid()}-{id(self):x}"
        self._chassis = ChassisSet(vhosts, root, dummy=not kind.touches_kernel, control_plane=control_plane)
        self._vms = VmOperations(self._planes, self.metrics, self._chassis)
        self._overlay = OverlayOperations(self._planes)
        self._pings = PingOperations(self._planes, max_pings)
        # Alcor's southbound: goal states applied to these vhosts (served beside this servicer).
        self.goalstates = HostProvisioners(
            self._planes, vhosts.vhosts.values(), netns_fd=management_netns, marker=goalstate_marker
        )
        self._ports = PortOperations(
            self._planes,
            self._vms,
            self.metrics,
            alcor=alcor,
            management_netns=management_netns,
            control_plane=control_plane,
            goalstates=self.goalstates,
        )

    async def close(self) -> None:
        """Stop the vhosts' OVN chassis, the ping and worker threads, release the host tuner, close the Alcor
        clients."""
        await self._chassis.close()
        await self.goalstates.close()
        self._pings.close()
        self._planes.close()
        await self._ports.close()

    # --- batch API ---------------------------------------------------------------------------

    async def CreateVms(
        self, request: agent_pb2.CreateVmsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.CreateVmsReply:
        """Create many VMs (and their VPCs) in one vhost; invalid input rejects the whole batch."""
        return await self._vms.create_vms(request)

    async def DeleteVms(
        self, request: agent_pb2.DeleteVmsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.DeleteVmsReply:
        """Delete VMs by name (missing ones count as deleted), or every VM with `all`."""
        return await self._vms.delete_vms(request)

    async def SetVpcPeers(
        self, request: agent_pb2.SetVpcPeersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.SetVpcPeersReply:
        """Set the VNI's flood list and push or withdraw remote VMs' entries."""
        return await self._overlay.set_vpc_peers(request)

    async def ListVms(
        self, request: agent_pb2.ListVmsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.ListVmsReply:
        """The VMs present in a vhost."""
        return await self._vms.list_vms(request)

    async def Ping(
        self, request: agent_pb2.PingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.PingReply:
        """ICMP echo from inside a VM, retried for `retry_seconds` while a destination stays silent."""
        return await self._pings.ping(request)

    async def EnsureChassis(
        self, request: agent_pb2.EnsureChassisRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.EnsureChassisReply:
        """Make the vhost an OVN chassis connected to `sb_remote` (idempotent)."""
        return await self._chassis.ensure(request, self._planes.vhost(request.vhost))

    # --- Merak's API -------------------------------------------------------------------------

    async def PortHandler(
        self, request: agent_pb2.InternalPortConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnInfo:
        """PRECREATE / CREATE / DELETE / UPDATE of one VM port, as Merak's agent (without its MODE bug);
        the reply lists the calls made into Alcor, timed."""
        return await self._ports.port_handler(request)

    async def PortHandlerBatch(
        self, request: agent_pb2.PortBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.PortBatchReply:
        """PortHandler for many ports of one vhost and operation: Alcor's calls go out side by side, a
        CREATE's VMs are made in one go; one result per port, each with its own status."""
        return await self._ports.port_handler_batch(request)

    async def BulkPortAdd(
        self, request: agent_pb2.BulkPorts, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnInfo:
        """Merak added taps to OVS here; our ports are veth pairs made by CREATE: nothing to do."""
        return self._ports.bulk_port_add(request)

    async def TestHandler(
        self, request: agent_pb2.InternalTestTargetConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnTestInfo:
        """PINGALL from VM `src` to every `dest` (Merak declared it and never built it)."""
        return await self._pings.test(request)


def registration(servicer: AgentServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    add = agent_pb2_grpc.add_MerakAgentServiceServicer_to_server
    return ServiceRegistration(SERVICE_NAME, lambda server: add(servicer, server))
