"""Agents inside a real 2-vhost topology: VMs, VXLAN overlay, distributed gateway, VPC isolation."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from merak import netns
from merak.naming import gateway_mac
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, topology_pb2
from services.topology.backends.local import ns_prefix
from tests.stack import ServiceStack
from tests.support import assert_eventually, unique_name

pytestmark = pytest.mark.root

VPC_A, VNI_A = "vpc-a", 7101
VPC_B, VNI_B = "vpc-b", 7102


@dataclass
class Vhost:
    """One emulated host of the lab and a stub of its agent."""

    name: str
    vtep: str
    stub: agent_pb2_grpc.MerakAgentServiceAsyncStub
    channel: grpc.aio.Channel


@dataclass
class Lab:
    short: str
    vhosts: list[Vhost]


@pytest.fixture
async def lab(services: ServiceStack) -> AsyncIterator[Lab]:
    manager = await services.topology()
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=unique_name("agent-"), topology_type=topology_pb2.TREE, number_of_vhosts=2,
        vhost_per_rack=2, ports_per_vswitch=2, data_plane_cidr="10.210.0.0/24",
    )  # fmt: skip
    vhosts: list[Vhost] = []
    try:
        await manager.create(config)

        async def ready() -> topology_pb2.ReturnTopologyMessage | None:
            info = await manager.info(config.topology_id)
            return info if all(n.status == common_pb2.READY for n in info.compute_nodes) else None

        info: topology_pb2.ReturnTopologyMessage = await assert_eventually(
            ready, timeout=60, message="topology not ready"
        )
        for node in info.compute_nodes:
            channel = grpc.aio.insecure_channel(node.agent_endpoint)
            vhosts.append(
                Vhost(node.name, node.datapath_ip, agent_pb2_grpc.MerakAgentServiceStub(channel), channel)
            )
        short = ns_prefix(next(iter(manager._entries.values())).topology.spec.short_id)
        yield Lab(short, vhosts)
    finally:
        for vhost in vhosts:
            await vhost.channel.close(None)
        await manager.delete(config.topology_id)


def vm(name: str, vpc: str, vni: int, ip: str, *, prefix: int = 24, index: int) -> agent_pb2.VmSpec:
    gateway = str(next(ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False).hosts()))
    mac = f"02:aa:00:00:{vni % 256:02x}:{index:02x}"
    return agent_pb2.VmSpec(
        name=name, vpc_id=vpc, vni=vni, ip=ip, prefix_len=prefix, mac=mac, gateway=gateway
    )


VPC_A_SPEC = agent_pb2.VpcSpec(
    vpc_id=VPC_A,
    vni=VNI_A,
    gateway_mac=gateway_mac(VNI_A),
    subnets=[
        agent_pb2.SubnetGateway(cidr="10.1.0.0/24", gateway="10.1.0.1"),
        agent_pb2.SubnetGateway(cidr="10.1.1.0/24", gateway="10.1.1.1"),
    ],
)
VPC_B_SPEC = agent_pb2.VpcSpec(
    vpc_id=VPC_B,
    vni=VNI_B,
    gateway_mac=gateway_mac(VNI_B),
    subnets=[agent_pb2.SubnetGateway(cidr="10.1.0.0/24", gateway="10.1.0.1")],
)


def in_namespace(namespace: str, *command: str) -> str:
    """What a command prints, run inside a namespace."""
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *command], capture_output=True, text=True, check=False
    ).stdout


def fdb_entries(namespace: str) -> str:
    return in_namespace(namespace, "bridge", "fdb", "show")


async def test_overlay_across_two_vhosts(lab: Lab) -> None:
    h0, h1 = lab.vhosts
    # 10 VMs per vhost in subnet 1 of VPC A; one VM in subnet 2 on h1; one VM of VPC B (same CIDR) on h1.
    batches = {
        h0.name: [vm(f"v{i:03d}", VPC_A, VNI_A, f"10.1.0.{10 + i}", index=i) for i in range(10)],
        h1.name: [vm(f"v{i:03d}", VPC_A, VNI_A, f"10.1.0.{30 + i}", index=30 + i) for i in range(10)]
        + [vm("w000", VPC_A, VNI_A, "10.1.1.5", index=60)],
    }
    for vhost in lab.vhosts:
        reply = await vhost.stub.CreateVms(
            agent_pb2.CreateVmsRequest(vhost=vhost.name, vpcs=[VPC_A_SPEC], vms=batches[vhost.name])
        )
        assert reply.failed == 0, [r.error for r in reply.results if not r.ok]
        assert reply.created == len(batches[vhost.name])
    other = await h1.stub.CreateVms(
        agent_pb2.CreateVmsRequest(
            vhost=h1.name, vpcs=[VPC_B_SPEC], vms=[vm("b000", VPC_B, VNI_B, "10.1.0.50", index=90)]
        )
    )
    assert other.created == 1

    # The control plane pushes every remote VM of the VPC, and the flood list, to each vhost.
    for vhost, peer in ((h0, h1), (h1, h0)):
        neighbors = [agent_pb2.Neighbor(ip=v.ip, mac=v.mac, vtep=peer.vtep) for v in batches[peer.name]]
        await vhost.stub.SetVpcPeers(
            agent_pb2.SetVpcPeersRequest(vhost=vhost.name, vni=VNI_A, vteps=[peer.vtep], neighbors=neighbors)
        )

    subnet1 = [v for vs in batches.values() for v in vs if v.ip.startswith("10.1.0.")]
    for vhost in lab.vhosts:
        for source in batches[vhost.name]:
            if not source.ip.startswith("10.1.0."):
                continue
            dests = [v.ip for v in subnet1 if v.ip != source.ip]
            pinged = await vhost.stub.Ping(
                agent_pb2.PingRequest(vhost=vhost.name, vm=source.name, destinations=dests, retry_seconds=5)
            )
            assert pinged.failed == 0, [(r.destination, r.error) for r in pinged.results if not r.ok]
            assert pinged.passed == 19

    # ARP for a VM the control plane pushed is answered by the bridge of the asking vhost (ARP
    # suppression on the VXLAN port), not flooded to every VTEP: a pushed address that no VM holds
    # still resolves, to the pushed MAC, and nothing answers the ping itself.
    ghost = agent_pb2.Neighbor(ip="10.1.0.77", mac="02:aa:00:00:ff:77", vtep=h1.vtep)
    await h0.stub.SetVpcPeers(
        agent_pb2.SetVpcPeersRequest(vhost=h0.name, vni=VNI_A, vteps=[h1.vtep], neighbors=[ghost])
    )
    unanswered = await h0.stub.Ping(agent_pb2.PingRequest(vhost=h0.name, vm="v000", destinations=[ghost.ip]))
    assert unanswered.failed == 1
    resolved = in_namespace(f"{lab.short}0-v000", "ip", "neigh", "show", ghost.ip)
    assert f"lladdr {ghost.mac}" in resolved, resolved

    # Routed through the distributed gateway: subnet 1 on h0 → subnet 2 on h1.
    routed = await h0.stub.Ping(
        agent_pb2.PingRequest(vhost=h0.name, vm="v000", destinations=["10.1.1.5"], retry_seconds=5)
    )
    assert routed.passed == 1, routed.results[0].error
    # VPC B overlaps VPC A's CIDR, but nothing of A reaches it: not from h0, not from its own vhost h1.
    for vhost in (h0, h1):
        isolated = await vhost.stub.Ping(
            agent_pb2.PingRequest(vhost=vhost.name, vm="v000", destinations=["10.1.0.50"], retry_seconds=2)
        )
        assert isolated.failed == 1
    # …and B's VM reaches nothing of A (its only neighbour is its own gateway).
    from_b = await h1.stub.Ping(agent_pb2.PingRequest(vhost=h1.name, vm="b000", destinations=["10.1.0.30"]))
    assert from_b.failed == 1

    # Re-sending the same batch changes nothing.
    again = await h0.stub.CreateVms(
        agent_pb2.CreateVmsRequest(vhost=h0.name, vpcs=[VPC_A_SPEC], vms=batches[h0.name])
    )
    assert (again.created, again.existing, again.failed) == (0, 10, 0)
    listed = await h0.stub.ListVms(agent_pb2.ListVmsRequest(vhost=h0.name))
    assert sorted(v.name for v in listed.vms) == [f"v{i:03d}" for i in range(10)]
    # A different spec under an existing name is refused for that VM only.
    changed = vm("v000", VPC_A, VNI_A, "10.1.0.99", index=0)
    clash = await h0.stub.CreateVms(
        agent_pb2.CreateVmsRequest(vhost=h0.name, vpcs=[VPC_A_SPEC], vms=[changed])
    )
    assert clash.failed == 1 and clash.results[0].error.startswith("already exists")

    # Deleting every VM leaves no VM or VPC namespace, link or forwarding entry behind.
    vm_namespaces = [n for n in netns.list_names(lab.short) if n[len(lab.short)].isdigit()]
    assert any("vpc" in n for n in vm_namespaces)
    assert "dst " + h1.vtep in fdb_entries(next(n for n in vm_namespaces if n.endswith(f"vpc{VNI_A}")))
    for vhost in lab.vhosts:
        deleted = await vhost.stub.DeleteVms(agent_pb2.DeleteVmsRequest(vhost=vhost.name, all=True))
        assert deleted.failed == 0
        assert (await vhost.stub.ListVms(agent_pb2.ListVmsRequest(vhost=vhost.name))).vms == []
    assert [n for n in netns.list_names(lab.short) if n[len(lab.short)].isdigit()] == []
    # Deleting again is a success.
    again_deleted = await h0.stub.DeleteVms(agent_pb2.DeleteVmsRequest(vhost=h0.name, names=["v000"]))
    assert again_deleted.deleted == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ip": "10.1.0.300"}, "vms[1]"),
        ({"mac": "zz:00:00:00:00:01"}, "vms[1]"),
        ({"gateway": "10.9.9.1"}, "vms[1]"),
        ({"name": "Bad_Name"}, "vms[1]"),
        ({"name": "v" * 40}, "vms[1]"),
        ({"prefix_len": 0}, "vms[1]"),
    ],
)
async def test_invalid_vm_rejects_the_batch(lab: Lab, change: dict[str, object], field: str) -> None:
    h0 = lab.vhosts[0]
    good = vm("v100", VPC_A, VNI_A, "10.1.0.100", index=1)
    bad = vm("v101", VPC_A, VNI_A, "10.1.0.101", index=2)
    for key, value in change.items():
        setattr(bad, key, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h0.stub.CreateVms(agent_pb2.CreateVmsRequest(vhost=h0.name, vpcs=[VPC_A_SPEC], vms=[good, bad]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(field), caught.value.details()
    assert (await h0.stub.ListVms(agent_pb2.ListVmsRequest(vhost=h0.name))).vms == []


async def test_unknown_vhost_and_bad_cidr(lab: Lab) -> None:
    h0 = lab.vhosts[0]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h0.stub.CreateVms(
            agent_pb2.CreateVmsRequest(vhost="vhost-99", vms=[vm("v1", VPC_A, VNI_A, "10.1.0.9", index=1)])
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("vhost")
    bad_vpc = agent_pb2.VpcSpec(
        vpc_id=VPC_A, vni=VNI_A, subnets=[agent_pb2.SubnetGateway(cidr="10.1.0.0/33", gateway="10.1.0.1")]
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await h0.stub.CreateVms(agent_pb2.CreateVmsRequest(vhost=h0.name, vpcs=[bad_vpc]))
    assert (caught.value.details() or "").startswith("vpcs[0]")
    assert [n for n in netns.list_names(lab.short) if n[len(lab.short)].isdigit()] == []


async def test_merak_port_handler_create_and_delete(lab: Lab) -> None:
    h0 = lab.vhosts[0]
    request = agent_pb2.InternalPortConfig(
        operation_type=common_pb2.CREATE, id="vm-id-1", name="v000", vpcid="vpc-merak", subnetid="subnet-1",
        gw="10.5.0.1", cidr="10.5.0.0/16", ip="10.5.0.2", mac="aa:bb:cc:dd:ee:ff", hostname=h0.name,
    )  # fmt: skip
    reply = await h0.stub.PortHandler(request)
    assert reply.return_code == common_pb2.OK, reply.return_message
    assert reply.port.status == common_pb2.DONE
    assert reply.port.ip == "10.5.0.2"
    assert (await h0.stub.PortHandler(request)).return_code == common_pb2.OK  # idempotent
    request.operation_type = common_pb2.DELETE
    assert (await h0.stub.PortHandler(request)).return_message == "Delete Success!"
    assert (await h0.stub.ListVms(agent_pb2.ListVmsRequest(vhost=h0.name))).vms == []
