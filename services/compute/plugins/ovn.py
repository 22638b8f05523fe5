"""The ovn VM plugin: each host becomes an OVN chassis (the agent's EnsureChassis), addresses come from our
IPAM and each VM gets a logical switch port in OVN's northbound database (the network service's
AllocatePorts), the agent plugs the VM into its chassis's br-int, and a VM is ready only once OVN says
its port is `up` (WaitPortsUp): the time from the port's insert in NB to `up` is the control plane's
latency for that port, recorded as the `port_up` operation."""

from __future__ import annotations

import time

import grpc
from temporalio.exceptions import ApplicationError

from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, network_pb2, network_pb2_grpc
from services.compute.contracts import PluginName
from services.compute.plugins.base import (
    ADDRESS_TIMEOUT,
    Call,
    Calls,
    VmPlugin,
    raise_activity_error,
    vm_spec,
)
from services.compute.plugins.native import NativeVms
from services.compute.store import Meta, VmRecord

# How long a batch's ports may take to come up before their VMs are ERROR.
PORT_UP_TIMEOUT = 120.0


class OvnVms(NativeVms):
    """VMs on OVN logical switch ports, bound by the chassis of their host."""

    name = PluginName.OVN
    needs_network_config = True
    runs_chassis = True

    def __init__(self, network: network_pb2_grpc.MerakNetworkServiceAsyncStub, agent_timeout: float) -> None:
        super().__init__(network, agent_timeout)
        # The southbound database of each network config (its chassis connect there), asked once.
        self._sb: dict[str, str] = {}

    async def _southbound(self, netconfig_id: str) -> str:
        remote = self._sb.get(netconfig_id)
        if remote:
            return remote
        request = network_pb2.InternalNetConfigInfo(
            operation_type=common_pb2.INFO,
            config=network_pb2.InternalNetConfigConfiguration(netconfig_id=netconfig_id),
        )
        try:
            reply = await self.network.NetConfigHandler(request, timeout=ADDRESS_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            raise_activity_error(exc, "network NetConfigHandler INFO")
        if not reply.ovn_sb:
            raise ApplicationError(
                f"network config {netconfig_id} names no OVN southbound database (is its plugin ovn?)",
                type="FAILED_PRECONDITION",
                non_retryable=True,
            )
        self._sb[netconfig_id] = reply.ovn_sb
        return reply.ovn_sb

    async def prepare(
        self, agent: agent_pb2_grpc.MerakAgentServiceAsyncStub, host: str, meta: Meta, calls: Calls
    ) -> None:
        """The host as an OVN chassis connected to the network config's southbound database (its start
        recorded as chassis_start)."""
        sb = await self._southbound(meta.netconfig_id)
        started = time.perf_counter()
        try:
            chassis = await agent.EnsureChassis(
                agent_pb2.EnsureChassisRequest(vhost=host, sb_remote=sb), timeout=self.agent_timeout
            )
        except grpc.aio.AioRpcError as exc:
            calls.append(Call("chassis_start", exc.code().name, time.perf_counter() - started))
            raise_activity_error(exc, f"agent EnsureChassis on {host}")
        if chassis.started:
            calls.append(Call("chassis_start", "OK", chassis.seconds))

    async def create(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        todo: list[VmRecord],
        calls: Calls,
    ) -> None:
        """The host as a chassis, the batch's ports in NB (idempotent per VM id), the VMs plugged in,
        then each VM DONE once its port is up (ERROR when it is not within PORT_UP_TIMEOUT)."""
        await self.prepare(agent, host, meta, calls)  # done before the first batch: a quick check now
        ports = await self._allocate(meta, todo, calls)
        create = agent_pb2.CreateVmsRequest(
            vhost=host,
            vms=[vm_spec(r, ports[r.id]) for r in todo],
        )
        try:
            reply = await agent.CreateVms(create, timeout=self.agent_timeout)
        except grpc.aio.AioRpcError as exc:
            raise_activity_error(exc, f"agent CreateVms on {host}")
        made = {r.name: r for r in reply.results}
        waiting: list[VmRecord] = []
        for record in todo:
            result = made.get(record.name)
            if result is not None and result.ok:
                waiting.append(record)
            else:
                record.status = common_pb2.ERROR
                record.error = result.error if result is not None else "no result"
        await self._wait_up(meta, waiting, ports, calls)

    # Host by host, side by side (each host's ports wait for its own chassis): not NativeVms' one
    # address request for a group.
    create_hosts = VmPlugin.create_hosts

    async def _allocate(self, meta: Meta, todo: list[VmRecord], calls: Calls) -> dict[str, str]:
        """AllocatePorts (addresses, and the logical switch ports in NB): the port name by VM id."""
        request = network_pb2.AllocatePortsRequest(
            netconfig_id=meta.netconfig_id,
            ports=[
                network_pb2.PortRequest(
                    vm_id=r.id, vpc_id=r.vpc, subnet_id=r.subnet, security_group_ids=list(r.sgs)
                )
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
        names: dict[str, str] = {}
        for record, port in zip(todo, allocated.ports, strict=True):
            record.ip, record.mac, record.prefix, record.vni = port.ip, port.mac, port.prefix_len, 0
            record.gmac, record.gw, record.cidr = port.gateway_mac, port.gateway, port.cidr
            names[record.id] = port.port_name
        return names

    async def _wait_up(
        self, meta: Meta, records: list[VmRecord], ports: dict[str, str], calls: Calls
    ) -> None:
        """Each VM DONE once its port is up in NB (its latency recorded), else ERROR."""
        if not records:
            return
        request = network_pb2.WaitPortsUpRequest(
            netconfig_id=meta.netconfig_id, vm_ids=[r.id for r in records], timeout_seconds=PORT_UP_TIMEOUT
        )
        try:
            reply = await self.network.WaitPortsUp(request, timeout=PORT_UP_TIMEOUT + 30)
        except grpc.aio.AioRpcError as exc:
            raise_activity_error(exc, "network WaitPortsUp")
        answers = {p.vm_id: p for p in reply.ports}
        for record in records:
            answer = answers.get(record.id)
            if answer is not None and answer.up:
                record.status, record.error = common_pb2.DONE, ""
                calls.append(Call("port_up", "OK", answer.seconds))
            else:
                record.status = common_pb2.ERROR
                record.error = (
                    f"logical switch port {ports.get(record.id, '?')} not up in OVN's northbound "
                    f"database after {PORT_UP_TIMEOUT:.0f} s"
                )
                calls.append(Call("port_up", "DEADLINE_EXCEEDED", PORT_UP_TIMEOUT))
