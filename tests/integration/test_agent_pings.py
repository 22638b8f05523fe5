"""Pings never starve an agent's VM work: a burst of pings to a silent destination runs on the pings' own
threads while VMs are made and removed, and one ping past the agent's limit is refused."""

from __future__ import annotations

import asyncio
import subprocess

import grpc
import pytest

from merak.naming import gateway_mac, topology_short_id
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, topology_pb2
from services.topology.backends.local import vm_ns_prefix
from tests.stack import ServiceStack
from tests.support import assert_eventually, unique_name

pytestmark = pytest.mark.root

VNI = 7301
VPC = agent_pb2.VpcSpec(
    vpc_id="vpc-p",
    vni=VNI,
    gateway_mac=gateway_mac(VNI),
    subnets=[agent_pb2.SubnetGateway(cidr="10.1.0.0/24", gateway="10.1.0.1")],
)
# Fewer kernel workers than pings in flight: before pings had threads of their own, this burst held
# every worker and a VM call waited for the pings' timeouts.
WORKERS, MAX_PINGS = 2, 4
SILENT_TIMEOUT = 15.0


def echoes_sent(namespace: str) -> int:
    """ICMP echo requests sent from `namespace` so far (its /proc/net/snmp)."""
    snmp = subprocess.run(
        ["ip", "netns", "exec", namespace, "cat", "/proc/net/snmp"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names, values = (line.split()[1:] for line in snmp.splitlines() if line.startswith("Icmp:"))
    return int(dict(zip(names, values, strict=True))["OutEchos"])


def vm(name: str, ip: str, index: int) -> agent_pb2.VmSpec:
    return agent_pb2.VmSpec(
        name=name, vpc_id=VPC.vpc_id, vni=VNI, ip=ip, prefix_len=24, mac=f"02:aa:00:00:73:{index:02x}",
        gateway="10.1.0.1",
    )  # fmt: skip


async def test_a_burst_of_slow_pings_does_not_hold_up_vms_and_the_excess_is_refused(
    services: ServiceStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent processes the topology service starts take the MERAK_* environment.
    monkeypatch.setenv("MERAK_WORKERS", str(WORKERS))
    monkeypatch.setenv("MERAK_MAX_PINGS_IN_FLIGHT", str(MAX_PINGS))
    manager = await services.topology()
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=unique_name("pings-"), topology_type=topology_pb2.TREE, number_of_vhosts=1,
        vhost_per_rack=1, ports_per_vswitch=2, data_plane_cidr="10.227.0.0/24",
    )  # fmt: skip
    await manager.create(config)
    burst: list[asyncio.Task[agent_pb2.PingReply]] = []
    try:

        async def ready() -> common_pb2.InternalComputeInfo | None:
            info = await manager.info(config.topology_id)
            nodes = list(info.compute_nodes)
            return nodes[0] if nodes and nodes[0].status == common_pb2.READY else None

        node: common_pb2.InternalComputeInfo = await assert_eventually(ready, timeout=60, message="lab ready")
        async with grpc.aio.insecure_channel(node.agent_endpoint) as channel:
            agent = agent_pb2_grpc.MerakAgentServiceStub(channel)
            made = await agent.CreateVms(
                agent_pb2.CreateVmsRequest(vhost=node.name, vpcs=[VPC], vms=[vm("v0", "10.1.0.10", 0)])
            )
            assert made.created == 1, [r.error for r in made.results]
            # A neighbour the control plane pushed that no VM holds: its address resolves (ARP
            # suppression) and nothing answers, so each ping waits its whole timeout.
            ghost = agent_pb2.Neighbor(ip="10.1.0.99", mac="02:aa:00:00:73:99", vtep="10.227.0.250")
            await agent.SetVpcPeers(agent_pb2.SetVpcPeersRequest(vhost=node.name, vni=VNI, neighbors=[ghost]))
            silent = agent_pb2.PingRequest(
                vhost=node.name, vm="v0", destinations=[ghost.ip], timeout_seconds=SILENT_TIMEOUT
            )

            async def ping_silent() -> agent_pb2.PingReply:
                return await agent.Ping(silent)

            vm_ns = f"{vm_ns_prefix(topology_short_id(config.topology_id), 0)}-v0"
            sent_before = echoes_sent(vm_ns)
            burst = [asyncio.create_task(ping_silent()) for _ in range(MAX_PINGS)]
            # Each ping sends its echo request once it is in: then every place is taken.
            await assert_eventually(
                lambda: echoes_sent(vm_ns) >= sent_before + MAX_PINGS, timeout=20, message="the burst sent"
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:  # a quick one (the gateway answers)
                await agent.Ping(agent_pb2.PingRequest(vhost=node.name, vm="v0", destinations=["10.1.0.1"]))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value
            details = caught.value.details() or ""
            assert "max_pings_in_flight" in details and str(MAX_PINGS) in details, details

            # VM work goes on while every ping waits for its silent destination.
            more = await agent.CreateVms(
                agent_pb2.CreateVmsRequest(vhost=node.name, vpcs=[VPC], vms=[vm("v1", "10.1.0.11", 1)])
            )
            assert more.created == 1, [r.error for r in more.results]
            removed = await agent.DeleteVms(agent_pb2.DeleteVmsRequest(vhost=node.name, names=["v1"]))
            assert removed.deleted == 1
            assert not any(task.done() for task in burst), "the pings ended before the VM calls did"

            replies = await asyncio.gather(*burst)
            assert all(r.failed == 1 and "no reply" in r.results[0].error for r in replies), replies
            # Their places are free again.
            after = await agent.Ping(
                agent_pb2.PingRequest(vhost=node.name, vm="v0", destinations=["10.1.0.1"], retry_seconds=5)
            )
            assert after.passed == 1, after.results[0].error
    finally:
        for task in burst:
            task.cancel()
        await asyncio.gather(*burst, return_exceptions=True)
        await manager.delete(config.topology_id)
