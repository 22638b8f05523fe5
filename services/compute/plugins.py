"""How VMs are created and deleted, per plugin: native (our IPAM + the agents' batch API) or Alcor
(Merak's PRECREATE -> CREATE through the agents, which call Alcor's port manager). A registry picks one.
"""

from __future__ import annotations

import abc
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import ClassVar, NoReturn

import grpc
from temporalio.exceptions import ApplicationError

from merak.errors import PERMANENT_CODES, InvalidArgument, is_permanent
from merak.naming import vni_for_vpc
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, network_pb2, network_pb2_grpc
from services.compute.contracts import PluginName
from services.compute.store import Meta, VmRecord

ADDRESS_TIMEOUT = 120.0
PERMANENT_CODE_NAMES = frozenset(code.name for code in PERMANENT_CODES)


@dataclass(frozen=True, slots=True)
class Call:
    """One call into the control plane under test, for the scenario's results."""

    operation: str
    code: str
    seconds: float


Calls = list[Call]


def raise_activity_error(exc: grpc.aio.AioRpcError, what: str) -> NoReturn:
    """A permanent gRPC error becomes a non-retryable failure; others are retried by Temporal."""
    message = f"{what}: {exc.code().name}: {exc.details()}"
    raise ApplicationError(message, type=exc.code().name, non_retryable=is_permanent(exc.code())) from exc


class VmPlugin(abc.ABC):
    """Creates and deletes one host's batch of VMs; records carry the outcome (status, error, addresses)."""

    name: ClassVar[PluginName]
    # The plugin's addresses come from one of our network configs (checked at CREATE).
    needs_network_config: ClassVar[bool]
    # The agents call Alcor's port manager (its URL travels with every port request).
    needs_alcor: ClassVar[bool] = False

    def __init__(self, network: network_pb2_grpc.MerakNetworkServiceAsyncStub, agent_timeout: float) -> None:
        self.network = network
        self.agent_timeout = agent_timeout

    @abc.abstractmethod
    async def create(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        todo: list[VmRecord],
        calls: Calls,
    ) -> None:
        """Create the VMs of `todo` on `host`; a transient failure raises (the activity is retried)."""

    @abc.abstractmethod
    async def delete(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        records: list[VmRecord],
        calls: Calls,
    ) -> None:
        """Remove the VMs from their host (raises grpc errors as they are: the caller knows a gone host)."""

    async def release(self, meta: Meta, records: list[VmRecord], calls: Calls) -> None:  # noqa: B027
        """Give the VMs' addresses back, where this plugin took them."""


class NativeVms(VmPlugin):
    """Addresses from our network service's IPAM, then the agent's batch CreateVms."""

    name = PluginName.NATIVE
    needs_network_config = True

    async def create(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        todo: list[VmRecord],
        calls: Calls,
    ) -> None:
        """Allocate the batch's ports (idempotent per VM id), then create the VMs in one call."""
        request = network_pb2.AllocatePortsRequest(
            netconfig_id=meta.netconfig_id,
            ports=[network_pb2.PortRequest(vm_id=r.id, vpc_id=r.vpc, subnet_id=r.subnet) for r in todo],
        )
        started = time.perf_counter()
        try:
            allocated = await self.network.AllocatePorts(request, timeout=ADDRESS_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            calls.append(Call("allocate_ports", exc.code().name, time.perf_counter() - started))
            raise_activity_error(exc, "network AllocatePorts")
        calls.append(Call("allocate_ports", "OK", time.perf_counter() - started))
        subnets: dict[int, dict[str, str]] = defaultdict(dict)
        vpcs: dict[int, tuple[str, str]] = {}
        for record, port in zip(todo, allocated.ports, strict=True):
            record.ip, record.mac, record.prefix, record.vni = port.ip, port.mac, port.prefix_len, port.vni
            record.gmac, record.gw, record.cidr = port.gateway_mac, port.gateway, port.cidr
            subnets[port.vni][port.cidr] = port.gateway
            vpcs[port.vni] = (port.vpc_id, port.gateway_mac)
        create = agent_pb2.CreateVmsRequest(
            vhost=host,
            vpcs=[
                agent_pb2.VpcSpec(
                    vpc_id=vpc_id,
                    vni=vni,
                    gateway_mac=gmac,
                    subnets=[
                        agent_pb2.SubnetGateway(cidr=c, gateway=g) for c, g in sorted(subnets[vni].items())
                    ],
                )
                for vni, (vpc_id, gmac) in sorted(vpcs.items())
            ],
            vms=[
                agent_pb2.VmSpec(
                    name=r.name,
                    vpc_id=r.vpc,
                    vni=r.vni,
                    ip=r.ip,
                    prefix_len=r.prefix,
                    mac=r.mac,
                    gateway=r.gw,
                    id=r.id,
                    subnet_id=r.subnet,
                )
                for r in todo
            ],
        )
        try:
            reply = await agent.CreateVms(create, timeout=self.agent_timeout)
        except grpc.aio.AioRpcError as exc:
            raise_activity_error(exc, f"agent CreateVms on {host}")
        results = {r.name: r for r in reply.results}
        for record in todo:
            result = results.get(record.name)
            record.status = common_pb2.DONE if result is not None and result.ok else common_pb2.ERROR
            record.error = (
                "" if result is not None and result.ok else (result.error if result else "no result")
            )

    async def delete(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        records: list[VmRecord],
        calls: Calls,
    ) -> None:
        """One DeleteVms call for the batch."""
        names = [r.name for r in records]
        await agent.DeleteVms(agent_pb2.DeleteVmsRequest(vhost=host, names=names), timeout=self.agent_timeout)

    async def release(self, meta: Meta, records: list[VmRecord], calls: Calls) -> None:
        """Free the batch's addresses in the IPAM."""
        started = time.perf_counter()
        try:
            await self.network.ReleasePorts(
                network_pb2.ReleasePortsRequest(
                    netconfig_id=meta.netconfig_id, vm_ids=[r.id for r in records]
                ),
                timeout=ADDRESS_TIMEOUT,
            )
            calls.append(Call("release_ports", "OK", time.perf_counter() - started))
        except grpc.aio.AioRpcError as exc:
            calls.append(Call("release_ports", exc.code().name, time.perf_counter() - started))
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # the network config went first: nothing to free
                raise_activity_error(exc, "network ReleasePorts")


def _port(
    record: VmRecord, op: common_pb2.OperationType.ValueType, host: str, meta: Meta
) -> agent_pb2.InternalPortConfig:
    """The PortHandler request of a VM."""
    return agent_pb2.InternalPortConfig(
        operation_type=op,
        id=record.id,
        name=record.name,
        vpcid=record.vpc,
        tenantid=record.tenant,
        projectid=record.project,
        subnetid=record.subnet,
        gw=record.gw,
        sg=record.sgs[0] if record.sgs else "",
        cidr=record.cidr,
        hostname=host,
        remoteid=record.remote,
        deviceid=record.device,
        ip=record.ip,
        mac=record.mac,
        vhost=host,
        alcor_url=meta.alcor_url,
    )


class AlcorVms(VmPlugin):
    """Merak's flow: PRECREATE (Alcor port: IP, MAC, port id), then CREATE (bind + build), per VM; a
    batch's VMs go to the agent in one PortHandlerBatch call per step."""

    name = PluginName.ALCOR
    needs_network_config = False
    needs_alcor = True

    async def _ports(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        records: list[VmRecord],
        *,
        op: common_pb2.OperationType.ValueType,
        calls: Calls,
    ) -> list[tuple[VmRecord, agent_pb2.PortResult]]:
        """One PortHandlerBatch step. A port that failed permanently marks its VM ERROR and is left out
        of the answer; one that failed for a passing reason fails the activity (Temporal retries the
        batch: the ports already made are found again, not made twice)."""
        if not records:
            return []
        request = agent_pb2.PortBatchRequest(ports=[_port(r, op, host, meta) for r in records])
        reply = await agent.PortHandlerBatch(request, timeout=self.agent_timeout)
        done: list[tuple[VmRecord, agent_pb2.PortResult]] = []
        passing: list[str] = []
        for record, result in zip(records, reply.results, strict=True):
            calls.extend(Call(c.operation, c.code, c.seconds) for c in result.calls)
            if result.code == grpc.StatusCode.OK.name:
                done.append((record, result))
            elif result.code in PERMANENT_CODE_NAMES:
                record.status, record.error = common_pb2.ERROR, f"{result.code}: {result.message}"
            else:
                passing.append(f"{record.name}: {result.code}: {result.message}")
        if passing:
            raise ApplicationError(
                f"agent PortHandlerBatch on {host}: {len(passing)} ports failed, first {passing[0]}",
                type="PortsFailed",
            )
        return done

    async def create(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        todo: list[VmRecord],
        calls: Calls,
    ) -> None:
        """PRECREATE the VMs without an Alcor port yet, then CREATE those that have one."""
        fresh = [r for r in todo if not r.remote]
        try:
            made = await self._ports(agent, host, meta, fresh, op=common_pb2.PRECREATE, calls=calls)
            for record, result in made:
                port = result.reply.port
                record.ip, record.mac = port.ip, port.mac
                record.remote, record.device = port.remoteid, port.deviceid
            ready = [r for r in todo if r.remote and r.status != common_pb2.ERROR]
            bound = await self._ports(agent, host, meta, ready, op=common_pb2.CREATE, calls=calls)
        except grpc.aio.AioRpcError as exc:
            raise_activity_error(exc, f"agent PortHandlerBatch on {host}")
        for record, result in bound:
            ok = result.reply.return_code == common_pb2.OK
            record.status = common_pb2.DONE if ok else common_pb2.ERROR
            record.error = "" if ok else result.reply.return_message
            # The agent puts the VM in the VPC's overlay under this VNI: the overlay step needs it.
            record.vni = vni_for_vpc(record.vpc)

    async def delete(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        records: list[VmRecord],
        calls: Calls,
    ) -> None:
        """PortHandler DELETE of the batch's VMs in one call (the agent removes the Alcor ports and
        the VMs); a port that cannot be removed fails the batch."""
        done = await self._ports(agent, host, meta, records, op=common_pb2.DELETE, calls=calls)
        if len(done) < len(records):
            failed = [r for r in records if r.status == common_pb2.ERROR]
            raise ApplicationError(
                f"agent PortHandlerBatch DELETE on {host}: {len(failed)} ports not removed, "
                f"first {failed[0].name}: {failed[0].error}",
                type="PortsFailed",
                non_retryable=True,
            )


PLUGINS: dict[str, type[VmPlugin]] = {cls.name: cls for cls in (NativeVms, AlcorVms)}


def plugin_type(name: str, field: str = "config.plugin") -> type[VmPlugin]:
    """The plugin called `name` ("" = native); an unknown name is an error that lists the known ones."""
    found = PLUGINS.get(name or PluginName.NATIVE)
    if found is None:
        raise InvalidArgument(field, f"unknown plugin {name!r}; known: {', '.join(sorted(PLUGINS))}")
    return found
