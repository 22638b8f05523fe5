"""Merak's port API: PortHandler (one port) and PortHandlerBatch, native or bound in Alcor, each reply
listing the calls made into Alcor, timed."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable
from typing import TypeVar

import grpc

from merak import callstats
from merak.controlplane import ControlPlaneAllow
from merak.errors import FailedPrecondition, InvalidArgument, enum_name, status_for
from merak.naming import gateway_mac, vni_for_vpc
from merak.v1 import agent_pb2, common_pb2
from services.agent import convert
from services.agent.alcor import AlcorPorts, check_alcor_url, port_id_for
from services.agent.goalstate.host import HostProvisioners
from services.agent.metrics import AgentMetrics
from services.agent.models import SubnetSpec, VmSpec, VpcSpec
from services.agent.validation import host_ifname
from services.agent.vhost_planes import VhostPlanes
from services.agent.vhosts import Vhost
from services.agent.vms import VmOperations

T = TypeVar("T")

# Ports per PortHandlerBatch call (compute sends a batch of VMs, 250 by default).
MAX_PORT_BATCH = 1000
# What became of one port of a batch (PortHandler's reply, or the error it raised) and its Alcor calls.
PortOutcome = tuple[agent_pb2.AgentReturnInfo | Exception, list[agent_pb2.ControlPlaneCall]]


class PortOperations:
    """PRECREATE / CREATE / DELETE / UPDATE of VM ports, the VMs made and removed by `vms`."""

    def __init__(
        self,
        planes: VhostPlanes,
        vms: VmOperations,
        metrics: AgentMetrics,
        *,
        alcor: AlcorPorts | None,
        management_netns: int | None,
        control_plane: ControlPlaneAllow | None = None,
        goalstates: HostProvisioners | None = None,
    ) -> None:
        self._planes = planes
        # Alcor's goal states for these vhosts: a vhost serves them once it has an Alcor port.
        self._goalstates = goalstates
        # When each Alcor port was POSTed (time.monotonic()), until its CREATE: its time to data plane ready.
        self._posted: dict[str, float] = {}
        self._vms = vms
        self._metrics = metrics
        # The process override (MERAK_ALCOR_URL); otherwise each port request names its Alcor.
        self._alcor = alcor
        self._alcor_clients: dict[str, AlcorPorts] = {}
        # An fd of the namespace the agent started in: Alcor is reached from there.
        self._management_netns = management_netns
        # The Alcors a request may name (MERAK_CONTROL_PLANE_ALLOW; none by default): compute checked
        # them already, and the agent checks again, since whoever reaches its socket can name any URL.
        self._control_plane = control_plane or ControlPlaneAllow()

    async def close(self) -> None:
        """Close the Alcor clients."""
        if self._alcor is not None:
            await self._alcor.close()
        for client in self._alcor_clients.values():
            await client.close()

    async def port_handler(self, request: agent_pb2.InternalPortConfig) -> agent_pb2.AgentReturnInfo:
        """PortHandler: one port, as Merak's agent (without its MODE bug), with its Alcor calls."""
        reply, calls = await _recorded(self._port(request))
        if isinstance(reply, BaseException):
            raise reply
        reply.calls.extend(calls)
        return reply

    async def port_handler_batch(self, request: agent_pb2.PortBatchRequest) -> agent_pb2.PortBatchReply:
        """PortHandlerBatch: many ports of one vhost and operation; Alcor's calls go out side by side, a
        CREATE's VMs are made in one go; one result per port, each with its own status."""
        ports = list(request.ports)
        if len(ports) > MAX_PORT_BATCH:
            raise InvalidArgument("ports", f"{len(ports)} ports: at most {MAX_PORT_BATCH} per call")
        if not ports:
            return agent_pb2.PortBatchReply()
        first = ports[0]
        for i, port in enumerate(ports):
            if port.operation_type != first.operation_type:
                raise InvalidArgument(f"ports[{i}].operation_type", "one operation per batch")
            if (port.vhost or port.hostname) != (first.vhost or first.hostname):
                raise InvalidArgument(f"ports[{i}].vhost", "one vhost per batch")
        if first.operation_type == common_pb2.CREATE:
            outcomes = await self._create_ports(self._planes.vhost(first.vhost or first.hostname), ports)
        else:
            outcomes = list(await asyncio.gather(*(_recorded(self._port(p)) for p in ports)))
        reply = agent_pb2.PortBatchReply()
        for outcome, calls in outcomes:
            result = reply.results.add(calls=calls)
            if isinstance(outcome, BaseException):
                code, message = status_for(outcome)
                result.code, result.message = code.name, message
            else:
                result.code = grpc.StatusCode.OK.name
                result.reply.CopyFrom(outcome)
        return reply

    @staticmethod
    def bulk_port_add(request: agent_pb2.BulkPorts) -> agent_pb2.AgentReturnInfo:
        """BulkPortAdd: Merak added taps to OVS here; our ports are veth pairs made by CREATE."""
        return agent_pb2.AgentReturnInfo(
            return_code=common_pb2.OK,
            return_message=f"{len(request.tapnames)} ports: nothing to add (no OVS; CREATE makes the ports)",
        )

    async def _create_ports(
        self, vhost: Vhost, ports: list[agent_pb2.InternalPortConfig]
    ) -> list[PortOutcome]:
        """CREATE of many ports: each checked and bound in Alcor (side by side), then the VMs made in
        one plane call."""

        async def prepare(port: agent_pb2.InternalPortConfig) -> tuple[VpcSpec, VmSpec]:
            convert.vm_name("name", port.name)
            return await self._prepare_create(vhost, port, self._alcor_for(port))

        prepared = await asyncio.gather(*(_recorded(prepare(p)) for p in ports))
        ready = [
            (p, specs) for p, (specs, _) in zip(ports, prepared, strict=True) if isinstance(specs, tuple)
        ]
        vpcs = list(dict.fromkeys(vpc for _, (vpc, _) in ready))  # one per VPC and subnet
        made = await self._vms.create(
            vhost, vpcs, [vm for _, (_, vm) in ready], {p.name: p.id for p, _ in ready}
        )
        results = {r.name: r for r in made.results}
        replies = await asyncio.gather(
            *(
                self._goalstate_applied(vhost, port, _created_reply(port, specs[1], results[port.name]))
                for port, (specs, _) in zip(ports, prepared, strict=True)
                if isinstance(specs, tuple)
            )
        )
        answered = iter(replies)
        outcomes: list[PortOutcome] = []
        for specs, calls in prepared:
            outcomes.append((next(answered) if isinstance(specs, tuple) else specs, calls))
        return outcomes

    async def _goalstate_applied(
        self, vhost: Vhost, request: agent_pb2.InternalPortConfig, reply: agent_pb2.AgentReturnInfo
    ) -> agent_pb2.AgentReturnInfo:
        """A CREATE that waits for Alcor's goal state (goalstate_timeout_seconds): its VM is ready once the
        vhost applied the goal state for its port (the reply says after how long from the port's POST);
        an ERROR when none came in time. Others: `reply` as it is."""
        timeout = request.goalstate_timeout_seconds
        if timeout <= 0 or reply.return_code != common_pb2.OK or self._goalstates is None:
            return reply
        posted = self._posted.pop(request.remoteid, None)
        applied = await self._goalstates.wait_ready(vhost.name, request.remoteid, timeout)
        if applied is None:
            where = self._goalstates.serving.get(vhost.name, "nowhere")
            reply.return_code = common_pb2.FAILED
            reply.return_message = (
                f"Create failed: no goal state from Alcor for port {request.remoteid} within {timeout:g} s "
                f"(this vhost serves GoalStateProvisioner on {where}; does Alcor reach it?)"
            )
            reply.port.status = common_pb2.ERROR
            reply.port.goalstate_missing = True
            return reply
        if posted is not None:
            reply.port.goalstate_seconds = max(0.0, applied - posted)
            self._metrics.goalstate_ready.observe(reply.port.goalstate_seconds)
        return reply

    async def _port(self, request: agent_pb2.InternalPortConfig) -> agent_pb2.AgentReturnInfo:
        """One port's operation, its Alcor calls not yet attached."""
        vhost = self._planes.vhost(request.vhost or request.hostname)
        op = request.operation_type
        convert.vm_name("name", request.name)
        alcor = self._alcor_for(request)
        if op == common_pb2.PRECREATE:
            return await self._precreate(vhost, request, alcor)
        if op == common_pb2.CREATE:
            return await self._create(vhost, request, alcor)
        if op == common_pb2.DELETE:
            if alcor is not None and request.remoteid:
                await alcor.delete(project_id=request.projectid, port_id=request.remoteid)
            await self._vms.delete(vhost, [request.name])
            return agent_pb2.AgentReturnInfo(
                return_code=common_pb2.OK,
                return_message="Delete Success!",
                port=agent_pb2.ReturnPortInfo(id=request.id, status=common_pb2.DELETING),
            )
        if op == common_pb2.UPDATE:
            if alcor is not None:
                raise FailedPrecondition("UPDATE of a port is not supported in alcor mode")
            await self._vms.delete(vhost, [request.name])
            return await self._create(vhost, request, None)
        raise InvalidArgument(
            "operation_type", f"{enum_name(common_pb2.OperationType, op)} is not a port operation"
        )

    def _alcor_for(self, request: agent_pb2.InternalPortConfig) -> AlcorPorts | None:
        """The port manager of this request: the process override (MERAK_ALCOR_URL), else the request's
        `alcor_url` (one client per URL, kept), else none (native mode)."""
        if self._alcor is not None:
            return self._alcor
        if not request.alcor_url:
            return None
        url = check_alcor_url("alcor_url", request.alcor_url)
        self._control_plane.check_url("alcor_url", url)
        client = self._alcor_clients.get(url)
        if client is None:
            client = self._alcor_clients[url] = AlcorPorts(
                url, netns_fd=self._management_netns, metrics=self._metrics.control_plane
            )
        return client

    async def _serve_goalstates(self, vhost: Vhost) -> None:
        """The vhost answers Alcor's goal states from now on (on its own address: Alcor reaches it there)."""
        if self._goalstates is not None:
            await self._goalstates.serve(vhost.name)

    async def _precreate(
        self, vhost: Vhost, request: agent_pb2.InternalPortConfig, alcor: AlcorPorts | None
    ) -> agent_pb2.AgentReturnInfo:
        """PRECREATE: the port made in Alcor, which picks its address (nothing to do in native mode)."""
        if alcor is None:  # native: addresses come from the network service; nothing to do yet
            return agent_pb2.AgentReturnInfo(
                return_code=common_pb2.OK,
                return_message="Precreate not needed in native mode",
                port=agent_pb2.ReturnPortInfo(id=request.id, status=common_pb2.DEPLOYING),
            )
        for field in ("vpcid", "subnetid", "projectid"):
            if not getattr(request, field):
                raise InvalidArgument(field, "required for PRECREATE in alcor mode")
        await self._serve_goalstates(vhost)
        port_id = port_id_for(self._planes.vhosts.topology_id, vhost.name, request.name)
        self._posted[port_id] = time.monotonic()  # time to data plane ready runs from the POST
        port = await alcor.create_minimal(
            project_id=request.projectid,
            tenant_id=request.tenantid,
            vpc_id=request.vpcid,
            subnet_id=request.subnetid,
            security_group=request.sg,
            device_id=request.name,
            port_id=port_id,
        )
        return agent_pb2.AgentReturnInfo(
            return_code=common_pb2.OK,
            return_message="Precreate Success",
            port=agent_pb2.ReturnPortInfo(
                id=request.id, ip=port.ip, mac=port.mac, remoteid=port.port_id, deviceid=port.tap_name,
                status=common_pb2.DEPLOYING,
            ),
        )  # fmt: skip

    async def _create(
        self, vhost: Vhost, request: agent_pb2.InternalPortConfig, alcor: AlcorPorts | None
    ) -> agent_pb2.AgentReturnInfo:
        """CREATE of one port: checked, bound, its VM made."""
        vpc, spec = await self._prepare_create(vhost, request, alcor)
        reply = await self._vms.create(vhost, [vpc], [spec], {request.name: request.id})
        return await self._goalstate_applied(vhost, request, _created_reply(request, spec, reply.results[0]))

    async def _prepare_create(
        self, vhost: Vhost, request: agent_pb2.InternalPortConfig, alcor: AlcorPorts | None
    ) -> tuple[VpcSpec, VmSpec]:
        """A CREATE checked, and its port bound in Alcor (alcor mode): the VPC and VM to make."""
        for field in ("vpcid", "ip", "mac", "gw", "cidr"):
            if not getattr(request, field):
                raise InvalidArgument(field, "required for CREATE")
        try:
            network = ipaddress.IPv4Network(request.cidr, strict=False)
        except ValueError:
            raise InvalidArgument("cidr", f"{request.cidr!r} is not an IPv4 network") from None
        if alcor is not None:
            if not request.remoteid:
                raise InvalidArgument("remoteid", "required for CREATE in alcor mode (the PRECREATE port id)")
            await self._serve_goalstates(vhost)  # before the bind: Alcor pushes the port's goal state then
            await alcor.bind(
                project_id=request.projectid, tenant_id=request.tenantid, port_id=request.remoteid,
                vpc_id=request.vpcid, vm_name=request.name, host=request.hostname or vhost.name,
            )  # fmt: skip
        vni = vni_for_vpc(request.vpcid)
        vpc = convert.checked_vpc(
            "vpcid", VpcSpec(request.vpcid, vni, (SubnetSpec(str(network), request.gw),), gateway_mac(vni))
        )
        spec = convert.checked_vm(
            "name",
            VmSpec(
                request.name,
                request.vpcid,
                vni,
                request.ip,
                network.prefixlen,
                request.mac.lower(),
                request.gw,
            ),
        )
        return vpc, spec


def _created_reply(
    request: agent_pb2.InternalPortConfig, spec: VmSpec, result: agent_pb2.VmResult
) -> agent_pb2.AgentReturnInfo:
    """PortHandler's answer to a CREATE, from the VM's result."""
    if not result.ok:
        return agent_pb2.AgentReturnInfo(
            return_code=common_pb2.FAILED,
            return_message=f"Create failed: {result.error}",
            port=agent_pb2.ReturnPortInfo(id=request.id, status=common_pb2.ERROR),
        )
    return agent_pb2.AgentReturnInfo(
        return_code=common_pb2.OK,
        return_message="Create Success",
        port=agent_pb2.ReturnPortInfo(
            id=request.id, ip=request.ip, mac=spec.mac, remoteid=request.remoteid,
            deviceid=request.deviceid or host_ifname(request.name), status=common_pb2.DONE,
        ),
    )  # fmt: skip


async def _recorded(work: Awaitable[T]) -> tuple[T | Exception, list[agent_pb2.ControlPlaneCall]]:
    """Run `work`, collecting the Alcor calls it makes (its outcome, or the exception it raised)."""
    with callstats.recording() as calls:
        try:
            outcome: T | Exception = await work
        except Exception as exc:  # handed back: PortHandler raises it, a batch reports it for its port
            outcome = exc
    return outcome, [
        agent_pb2.ControlPlaneCall(operation=c.operation, code=c.code, seconds=c.seconds) for c in calls
    ]
