"""Goal states build the data plane (#29): two real vhosts (namespaces on an underlay bridge), each served
by an agent with alcor.schema.GoalStateProvisioner beside its own API. The VMs of one VPC on both cannot
reach each other until each host is pushed the goal state Alcor's NCM would send it (its port, the
subnet, the other host's port as a neighbour); then they ping across hosts. A port whose VM does not
exist yet is PENDING."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import TypeAlias

import grpc
import pytest
from prometheus_client import CollectorRegistry

from alcor.schema import common_pb2, goalstate_pb2, goalstateprovisioner_pb2_grpc, neighbor_pb2
from merak.grpcserver import GrpcServer
from merak.naming import vni_for_vpc
from merak.v1 import agent_pb2, agent_pb2_grpc
from merak.vhostsfile import Vhost
from services.agent.goalstate.provisioner import GoalStateProvisionerServicer
from services.agent.goalstate.provisioner import registration as goalstate_registration
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from tests.integration.agent.test_real_plane import lab

pytestmark = pytest.mark.root

AgentStub: TypeAlias = "agent_pb2_grpc.MerakAgentServiceAsyncStub"
AlcorStub: TypeAlias = "goalstateprovisioner_pb2_grpc.GoalStateProvisionerAsyncStub"

# Alcor numbers a VPC's tunnel its own way; the agent keys the VPC's overlay by our VNI of its id, as it
# made the VMs (the goal state's neighbours land there by the subnet's vpc_id).
TUNNEL_ID = 4096
VNI = vni_for_vpc("vpc-1")
PORTS = ["0a0a0a0a-0000-4000-8000-000000000001", "0b0b0b0b-0000-4000-8000-000000000002"]


@dataclass
class Host:
    name: str
    ip: str
    vm_ip: str
    vm_mac: str
    agent: AgentStub
    alcor: AlcorStub


def goal_state(
    me: Host, port_id: str, peer: Host, peer_port: str, *, with_port: bool = True
) -> goalstate_pb2.GoalStateV2:
    """What NCM sends `me` when its port is bound: the subnet, its port, the peer's port as a neighbour."""
    gs = goalstate_pb2.GoalStateV2(format_version=102)
    gs.host_resources[me.ip].resources.add(type=common_pb2.PORT, id=port_id)
    subnet = gs.subnet_states["sn-1"]
    subnet.operation_type = common_pb2.INFO
    config = subnet.configuration
    config.id, config.vpc_id, config.cidr, config.tunnel_id = "sn-1", "vpc-1", "10.71.0.0/24", TUNNEL_ID
    config.gateway.ip_address, config.gateway.mac_address = "10.71.0.1", "02:00:00:00:71:01"
    if with_port:
        port = gs.port_states[port_id]
        port.operation_type = common_pb2.CREATE
        pc = port.configuration
        pc.revision_number, pc.id, pc.vpc_id, pc.update_type = 1, port_id, "vpc-1", common_pb2.FULL
        pc.mac_address, pc.device_id, pc.device_owner = me.vm_mac, "vm", "compute:nova"
        pc.fixed_ips.add(subnet_id="sn-1", ip_address=me.vm_ip)
    neighbor = gs.neighbor_states[f"L2/{peer_port}"]
    neighbor.operation_type = common_pb2.UPDATE
    nc = neighbor.configuration
    nc.revision_number, nc.id, nc.vpc_id = 1, peer_port, "vpc-1"
    nc.mac_address, nc.host_ip_address = peer.vm_mac, peer.ip
    nc.fixed_ips.add(neighbor_type=neighbor_pb2.L2, subnet_id="sn-1", ip_address=peer.vm_ip)
    return gs


async def push(host: Host, message: goalstate_pb2.GoalStateV2) -> dict[str, int]:
    replies = [r async for r in host.alcor.PushGoalStatesStream(iter([message]), timeout=60)]
    assert len(replies) == 1
    return {s.resource_id: s.operation_status for s in replies[0].operation_statuses}


async def ping(host: Host, dest: str, retry: float) -> agent_pb2.PingReply:
    return await host.agent.Ping(
        agent_pb2.PingRequest(
            vhost=host.name, vm="vm0", destinations=[dest], timeout_seconds=0.5, retry_seconds=retry
        ),
        timeout=60,
    )


@pytest.fixture
async def hosts() -> AsyncIterator[list[Host]]:
    building = lab(2)  # pyroute2 runs its own event loop: the lab is made and removed in a thread
    vhosts = await asyncio.to_thread(building.__enter__)
    try:
        async with AsyncExitStack() as stack:
            made = []
            for i, vhost in enumerate(vhosts):
                record = Vhost(f"gs-{i}", i, vhost.ns, f"{vhost.ns}-m", vhost.ip, 24, "ul0", "")
                servicer = AgentServicer(VhostSet("gs-lab", "real", {record.name: record}))
                stack.push_async_callback(servicer.close)
                alcor = GoalStateProvisionerServicer(servicer.goalstates.pick)
                server = GrpcServer(
                    "127.0.0.1:0",
                    [registration(servicer), goalstate_registration(alcor)],
                    CollectorRegistry(),
                )
                await server.start()
                stack.push_async_callback(partial(server.stop, 0))
                channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
                stack.push_async_callback(partial(channel.close, None))
                agent: AgentStub = agent_pb2_grpc.MerakAgentServiceStub(channel)
                pushes: AlcorStub = goalstateprovisioner_pb2_grpc.GoalStateProvisionerStub(channel)
                made.append(
                    Host(record.name, vhost.ip, f"10.71.0.{11 + i}", f"02:71:00:00:00:{i:02x}", agent, pushes)
                )
            yield made
    finally:
        await asyncio.to_thread(building.__exit__, None, None, None)


async def test_goal_states_build_the_overlay_and_packets_flow(hosts: list[Host]) -> None:
    h0, h1 = hosts
    # Before its VM exists, a port is PENDING (its device is not there yet).
    assert await push(h0, goal_state(h0, PORTS[0], h1, PORTS[1])) == {PORTS[0]: common_pb2.PENDING}
    await make_vms(hosts)
    # No overlay yet: our own push is not used, so the VMs on two hosts cannot reach each other.
    assert (await ping(h0, h1.vm_ip, retry=0)).failed == 1
    # Each host gets what NCM would send it: its port and the other's as a neighbour.
    assert await push(h0, goal_state(h0, PORTS[0], h1, PORTS[1])) == {PORTS[0]: common_pb2.SUCCESS}
    assert await push(h1, goal_state(h1, PORTS[1], h0, PORTS[0])) == {PORTS[1]: common_pb2.SUCCESS}
    assert (await ping(h0, h1.vm_ip, retry=10)).passed == 1
    assert (await ping(h1, h0.vm_ip, retry=10)).passed == 1


async def test_neighbours_pushed_before_the_vms_exist_go_in_once_they_do(hosts: list[Host]) -> None:
    """Alcor pushes a port's goal state as soon as it is bound, before its VM (and the VPC on the host)
    exists: the neighbours are kept and programmed when the VM is made, with no second push."""
    h0, h1 = hosts
    assert await push(h0, goal_state(h0, PORTS[0], h1, PORTS[1])) == {PORTS[0]: common_pb2.PENDING}
    assert await push(h1, goal_state(h1, PORTS[1], h0, PORTS[0])) == {PORTS[1]: common_pb2.PENDING}
    await make_vms(hosts)
    assert (await ping(h0, h1.vm_ip, retry=10)).passed == 1
    assert (await ping(h1, h0.vm_ip, retry=10)).passed == 1


async def make_vms(hosts: list[Host]) -> None:
    """Each host's VM (vm0) in vpc-1, as the agent's CREATE makes it."""
    for host in hosts:
        vpc = agent_pb2.VpcSpec(
            vpc_id="vpc-1", vni=VNI, gateway_mac="02:00:00:00:71:01",
            subnets=[agent_pb2.SubnetGateway(cidr="10.71.0.0/24", gateway="10.71.0.1")],
        )  # fmt: skip
        vm = agent_pb2.VmSpec(
            name="vm0",
            vpc_id="vpc-1",
            vni=VNI,
            ip=host.vm_ip,
            prefix_len=24,
            mac=host.vm_mac,
            gateway="10.71.0.1",
        )
        created = await host.agent.CreateVms(
            agent_pb2.CreateVmsRequest(vhost=host.name, vpcs=[vpc], vms=[vm]), timeout=60
        )
        assert created.created == 1, created
