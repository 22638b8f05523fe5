"""The native VM plugin: addresses from our network service's IPAM, then the agents' batch CreateVms."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping

import grpc

from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, network_pb2
from services.compute.contracts import PluginName
from services.compute.plugins.base import (
    ADDRESS_TIMEOUT,
    Call,
    Calls,
    VmPlugin,
    each_host,
    raise_activity_error,
    vm_spec,
)
from services.compute.store import Meta, VmRecord


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
        await self._addresses(meta, todo, calls)
        await self._create_vms(agent, host, todo)

    async def create_hosts(
        self,
        agents: Mapping[str, agent_pb2_grpc.MerakAgentServiceAsyncStub],
        meta: Meta,
        todo: Mapping[str, list[VmRecord]],
        calls: Calls,
    ) -> dict[str, BaseException]:
        """Every host's ports in one address request, then each host's VMs in one call, side by side."""
        await self._addresses(meta, [r for records in todo.values() for r in records], calls)
        return await each_host({h: self._create_vms(agents[h], h, records) for h, records in todo.items()})

    async def _addresses(self, meta: Meta, todo: list[VmRecord], calls: Calls) -> None:
        """The VMs' addresses from the IPAM (idempotent per VM id), into their records."""
        request = network_pb2.AllocatePortsRequest(
            netconfig_id=meta.netconfig_id,
            ports=[
                network_pb2.PortRequest(vm_id=r.id, vpc_id=r.vpc, subnet_id=r.subnet, host=r.host)
                for r in todo
            ],
        )
        started = time.perf_counter()
        try:
            allocated = await self.network.AllocatePorts(request, timeout=ADDRESS_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            calls.append(Call("allocate_ports", exc.code().name, time.perf_counter() - started))
            raise_activity_error(exc, "network AllocatePorts")
        calls.append(Call("allocate_ports", "OK", time.perf_counter() - started))
        for record, port in zip(todo, allocated.ports, strict=True):
            record.ip, record.mac, record.prefix, record.vni = port.ip, port.mac, port.prefix_len, port.vni
            record.gmac, record.gw, record.cidr = port.gateway_mac, port.gateway, port.cidr
            record.route = port.route  # set when the network config gives each host address blocks

    async def _create_vms(
        self, agent: agent_pb2_grpc.MerakAgentServiceAsyncStub, host: str, todo: list[VmRecord]
    ) -> None:
        """One CreateVms call for the host's addressed VMs; each record gets its outcome."""
        subnets: dict[int, dict[str, str]] = defaultdict(dict)
        vpcs: dict[int, tuple[str, str]] = {}
        routed: set[int] = set()  # VPCs whose VMs' addresses come in per-host blocks: routed overlay
        for record in todo:
            subnets[record.vni][record.cidr] = record.gw
            vpcs[record.vni] = (record.vpc, record.gmac)
            if record.route:
                routed.add(record.vni)
        create = agent_pb2.CreateVmsRequest(
            vhost=host,
            vpcs=[
                agent_pb2.VpcSpec(
                    vpc_id=vpc_id,
                    vni=vni,
                    gateway_mac=gmac,
                    routed=vni in routed,
                    subnets=[
                        agent_pb2.SubnetGateway(cidr=c, gateway=g) for c, g in sorted(subnets[vni].items())
                    ],
                )
                for vni, (vpc_id, gmac) in sorted(vpcs.items())
            ],
            vms=[vm_spec(r) for r in todo],
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
