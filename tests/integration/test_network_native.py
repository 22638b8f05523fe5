"""Network service, native plugin: real Redis, real gRPC; VPCs, subnets, groups, routers, IPAM."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from merak.naming import gateway_mac
from merak.v1 import common_pb2, network_pb2, network_pb2_grpc
from services.network.app import build
from services.network.config import NetworkSettings
from services.network.manager import NetworkManager
from tests.support.plugin import ServeBuilt

TESTE2E = "network-config-1"
PROJECT = "123456789"


@dataclass
class Net:
    """A network service on a real server, and what a test needs to look behind it."""

    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub
    redis: aioredis.Redis
    manager: NetworkManager
    registry: CollectorRegistry


async def _serve(serve_built: ServeBuilt, redis: aioredis.Redis, settings: NetworkSettings) -> Net:
    built = await build(settings)
    address = await serve_built(built)
    channel = grpc.aio.insecure_channel(address)
    return Net(network_pb2_grpc.MerakNetworkServiceStub(channel), redis, built.root, built.registry)


def _local(redis_url: str, **settings: Any) -> NetworkSettings:
    """A network service on 127.0.0.1:0 over the test's Redis."""
    return NetworkSettings(host="127.0.0.1", grpc_port=0, redis_url=redis_url, **settings)


@pytest.fixture
async def net(serve_built: ServeBuilt, redis_client: aioredis.Redis, redis_url: str) -> AsyncIterator[Net]:
    yield await _serve(serve_built, redis_client, _local(redis_url))


def vpc(
    cidr: str, *subnets: tuple[str, str], vpc_id: str = "", tenant: str = PROJECT, project: str = PROJECT
) -> common_pb2.InternalVpcInfo:
    info = common_pb2.InternalVpcInfo(vpc_id=vpc_id, tenant_id=tenant, project_id=project, vpc_cidr=cidr)
    for subnet_cidr, gw in subnets:
        info.subnets.add(subnet_cidr=subnet_cidr, subnet_gw=gw, number_vms=50)
    return info


def config(
    netconfig_id: str = TESTE2E,
    vpcs: list[common_pb2.InternalVpcInfo] | None = None,
    groups: list[network_pb2.InternalSecurityGroupInfo] | None = None,
    routers: list[network_pb2.InternalRouterInfo] | None = None,
    computes: int = 5,
) -> network_pb2.InternalNetConfigConfiguration:
    """Merak's teste2e network config by default: 1 VPC 10.1.0.0/16, 1 subnet, 1 SG, 5 vhosts."""
    cfg = network_pb2.InternalNetConfigConfiguration(
        format_version=1, revision_number=1, request_id="req-1", netconfig_id=netconfig_id,
        message_type=common_pb2.FULL,
    )  # fmt: skip
    cfg.network.vpcs.extend(vpcs if vpcs is not None else [vpc("10.1.0.0/16", ("10.1.0.0/16", "10.1.0.1"))])
    cfg.network.security_groups.extend(
        groups
        if groups is not None
        else [
            network_pb2.InternalSecurityGroupInfo(
                id="sg-1", name="sg-1", tenant_id=PROJECT, project_id=PROJECT
            )
        ]
    )
    cfg.network.routers.extend(routers or [])
    for i in range(computes):
        cfg.computes.add(
            id=f"node-{i}", name=f"vhost-{i}", datapath_ip=f"10.200.0.{i + 2}", mac=f"02:00:00:00:00:{i:02x}",
            veth=f"eth{i}", container_ip=f"10.200.0.{i + 2}", status=common_pb2.READY,
        )  # fmt: skip
    return cfg


def op(
    operation: common_pb2.OperationType.ValueType, cfg: network_pb2.InternalNetConfigConfiguration
) -> network_pb2.InternalNetConfigInfo:
    return network_pb2.InternalNetConfigInfo(operation_type=operation, config=cfg)


def ident(netconfig_id: str) -> network_pb2.InternalNetConfigConfiguration:
    return network_pb2.InternalNetConfigConfiguration(netconfig_id=netconfig_id)


def ports(
    netconfig_id: str, vpc_id: str, subnet_id: str, vm_ids: list[str]
) -> network_pb2.AllocatePortsRequest:
    request = network_pb2.AllocatePortsRequest(netconfig_id=netconfig_id)
    for vm_id in vm_ids:
        request.ports.add(vm_id=vm_id, vpc_id=vpc_id, subnet_id=subnet_id)
    return request


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]  # a grpc.aio call object
    return caught.value.code(), caught.value.details() or ""


def _valid_host(ip: str, cidr: str, gateway: str) -> bool:
    network = ipaddress.IPv4Network(cidr)
    address = ipaddress.IPv4Address(ip)
    return address in network and address not in (
        network.network_address,
        network.broadcast_address,
        ipaddress.IPv4Address(gateway),
    )


async def test_teste2e_network_creates_allocates_and_deletes(net: Net) -> None:
    created = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    assert created.return_code == common_pb2.OK
    assert created.return_message.startswith("CREATE done")
    assert created.plugin == "native"
    assert len(created.vpcs) == 1 and len(created.security_group_ids) == 1
    assert created.security_group_ids == ["sg-1"]
    assert [c.id for c in created.computes] == [f"node-{i}" for i in range(5)]

    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident(TESTE2E)))
    assert info.return_code == common_pb2.OK
    (vpc_info,) = info.vpcs
    assert (vpc_info.tenant_id, vpc_info.project_id, vpc_info.vpc_cidr) == (PROJECT, PROJECT, "10.1.0.0/16")
    assert len(vpc_info.vpc_id) == 36  # generated (uuid4): the request had none
    assert 4096 <= vpc_info.vni <= 2**24 - 1
    assert vpc_info.gateway_mac == gateway_mac(vpc_info.vni)
    (subnet,) = vpc_info.subnets
    assert (subnet.subnet_cidr, subnet.subnet_gw, subnet.number_vms) == ("10.1.0.0/16", "10.1.0.1", 50)
    assert (subnet.allocated, subnet.capacity) == (0, 65536 - 3)

    vm_ids = [f"vm-{i}" for i in range(50)]
    reply = await net.stub.AllocatePorts(ports(TESTE2E, vpc_info.vpc_id, subnet.subnet_id, vm_ids))
    assert [p.vm_id for p in reply.ports] == vm_ids
    assert len({p.ip for p in reply.ports}) == 50 and len({p.mac for p in reply.ports}) == 50
    for port in reply.ports:
        assert _valid_host(port.ip, "10.1.0.0/16", "10.1.0.1")
        assert (port.prefix_len, port.gateway, port.cidr) == (16, "10.1.0.1", "10.1.0.0/16")
        assert (port.vni, port.gateway_mac, port.vpc_id) == (
            vpc_info.vni,
            vpc_info.gateway_mac,
            vpc_info.vpc_id,
        )
        assert port.mac.startswith(f"06:{vpc_info.vni & 0xFF:02x}:")
    assert reply.ports[0].ip == "10.1.0.2"  # lowest free host address first, as Alcor's IPAM
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident(TESTE2E)))
    assert info.vpcs[0].subnets[0].allocated == 50

    again = await net.stub.AllocatePorts(ports(TESTE2E, vpc_info.vpc_id, subnet.subnet_id, vm_ids[::-1]))
    assert [(p.vm_id, p.ip, p.mac) for p in again.ports] == [(p.vm_id, p.ip, p.mac) for p in reply.ports][
        ::-1
    ]

    deleted = await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident(TESTE2E)))
    assert deleted.return_code == common_pb2.OK and deleted.return_message.startswith("DELETE done")
    assert await net.redis.keys("merak:network:nc:*") == []
    assert await net.redis.hlen("merak:network:vni:owners") == 0
    code, _ = await _code(net.stub.NetConfigHandler(op(common_pb2.INFO, ident(TESTE2E))))
    assert code == grpc.StatusCode.NOT_FOUND

    # The addresses are free again: a new config over the same CIDR starts at .2.
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, config("network-config-2")))
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident("network-config-2")))
    fresh = await net.stub.AllocatePorts(
        ports("network-config-2", info.vpcs[0].vpc_id, info.vpcs[0].subnets[0].subnet_id, ["vm-0"])
    )
    assert fresh.ports[0].ip == "10.1.0.2"


async def test_delete_is_idempotent_and_create_is_a_no_op_for_the_same_config(net: Net) -> None:
    missing = await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident("never-made")))
    assert missing.return_code == common_pb2.OK and "did not exist" in missing.return_message
    first = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    second = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    assert second.vpcs == first.vpcs and second.security_group_ids == first.security_group_ids
    assert await net.redis.hlen("merak:network:vni:owners") == 1

    different = config()
    different.network.vpcs[0].subnets[0].subnet_gw = "10.1.0.9"
    code, details = await _code(net.stub.NetConfigHandler(op(common_pb2.CREATE, different)))
    assert code == grpc.StatusCode.ALREADY_EXISTS and TESTE2E in details

    await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident(TESTE2E)))
    again = await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident(TESTE2E)))
    assert again.return_code == common_pb2.OK


async def test_three_vpcs_three_subnets_two_groups_and_routers(net: Net) -> None:
    vpcs = [
        vpc(f"10.{v}.0.0/16", *((f"10.{v}.{s}.0/24", "") for s in range(3)), vpc_id=f"vpc-{v}")
        for v in range(3)
    ]
    groups = [
        network_pb2.InternalSecurityGroupInfo(id="", name="web", apply_to=["vm-1"]),
        network_pb2.InternalSecurityGroupInfo(id="sg-db", name="db"),
    ]
    groups[0].rules.add(protocol="tcp", port_range="80", remote_ip_prefix="0.0.0.0/0", direction="ingress")
    groups[1].rules.add(protocol="TCP", port_range="5432-5433", remote_group_id="web")
    groups[1].rules.add(ethertype="IPv6", direction="egress")
    routers = [
        network_pb2.InternalRouterInfo(name="r0", subnets=["10.0.0.0/24", "10.0.1.1", "10.0.2.0/24"]),
        network_pb2.InternalRouterInfo(id="r-2", subnets=["10.2.1.0/24"]),
    ]
    reply = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config("big", vpcs, groups, routers, 3)))
    assert [v.vpc_id for v in reply.vpcs] == ["vpc-0", "vpc-1", "vpc-2"]
    assert len({v.vni for v in reply.vpcs}) == 3
    for v, info in enumerate(reply.vpcs):
        assert [s.subnet_cidr for s in info.subnets] == [f"10.{v}.{s}.0/24" for s in range(3)]
        assert [s.subnet_gw for s in info.subnets] == [f"10.{v}.{s}.1" for s in range(3)]
        assert all(s.capacity == 253 for s in info.subnets)
    web, db = reply.security_groups
    assert reply.security_group_ids == [web.id, "sg-db"] and len(web.id) == 36
    assert (web.name, list(web.apply_to), web.tenant_id) == ("web", ["vm-1"], PROJECT)  # tenant from vpcs[0]
    (http,) = web.rules
    assert (http.protocol, http.port_range, http.direction, http.ethertype) == (
        "tcp",
        "80-80",
        "ingress",
        "IPv4",
    )
    pg, v6 = db.rules
    assert (pg.protocol, pg.port_range, pg.remote_group_id, pg.direction) == (
        "tcp",
        "5432-5433",
        web.id,
        "ingress",
    )
    assert (v6.ethertype, v6.direction) == ("IPv6", "egress")
    r0, r2 = reply.routers
    assert list(r0.subnets) == [s.subnet_id for s in reply.vpcs[0].subnets]
    assert (r2.id, list(r2.subnets)) == ("r-2", [reply.vpcs[2].subnets[1].subnet_id])

    # Ports in several subnets of several VPCs in one call; MACs unique across the VPC.
    request = network_pb2.AllocatePortsRequest(netconfig_id="big")
    for info in reply.vpcs:
        for s in info.subnets:
            for k in range(4):
                request.ports.add(vm_id=f"{s.subnet_id}-{k}", vpc_id=info.vpc_id, subnet_id=s.subnet_id)
    allocated = await net.stub.AllocatePorts(request)
    assert len(allocated.ports) == 36
    for port, asked in zip(allocated.ports, request.ports, strict=True):
        assert (port.vm_id, port.subnet_id) == (asked.vm_id, asked.subnet_id)
        assert _valid_host(port.ip, port.cidr, port.gateway) and port.ip.endswith((".2", ".3", ".4", ".5"))
    assert len({p.mac for p in allocated.ports}) == 36

    await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident("big")))
    assert await net.redis.keys("merak:network:nc:*") == []


async def test_twenty_concurrent_batches_of_500_never_collide(net: Net) -> None:
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident(TESTE2E)))
    vpc_id, subnet_id = info.vpcs[0].vpc_id, info.vpcs[0].subnets[0].subnet_id
    batches = [[f"b{b}-vm{i}" for i in range(500)] for b in range(20)]
    replies = await asyncio.gather(
        *(net.stub.AllocatePorts(ports(TESTE2E, vpc_id, subnet_id, batch)) for batch in batches)
    )
    ips = [p.ip for reply in replies for p in reply.ports]
    assert len(ips) == 10_000 and len(set(ips)) == 10_000
    assert all(_valid_host(ip, "10.1.0.0/16", "10.1.0.1") for ip in ips)
    # Lowest-free allocation under concurrency still packs the range: .2 up to the 10,001st host.
    assert (
        max(int(ipaddress.IPv4Address(ip)) for ip in ips) - int(ipaddress.IPv4Address("10.1.0.0")) == 10_001
    )
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident(TESTE2E)))
    assert info.vpcs[0].subnets[0].allocated == 10_000

    released = await net.stub.ReleasePorts(
        network_pb2.ReleasePortsRequest(netconfig_id=TESTE2E, vm_ids=[*batches[3], "nobody", "b3-vm0"])
    )
    assert released.released == 500
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident(TESTE2E)))
    assert info.vpcs[0].subnets[0].allocated == 9_500
    # The freed addresses go out again, lowest first.
    reuse = await net.stub.AllocatePorts(ports(TESTE2E, vpc_id, subnet_id, ["late"]))
    assert reuse.ports[0].ip == min((p.ip for p in replies[3].ports), key=ipaddress.IPv4Address)


async def test_running_out_is_resource_exhausted_and_allocates_nothing(net: Net) -> None:
    # A /29 holds 8 addresses: network, broadcast and gateway leave 5.
    cfg = config("tiny", [vpc("10.9.0.0/24", ("10.9.0.0/29", "10.9.0.6"))], groups=[], computes=0)
    created = await net.stub.NetConfigHandler(op(common_pb2.CREATE, cfg))
    vpc_id, subnet = created.vpcs[0].vpc_id, created.vpcs[0].subnets[0]
    assert subnet.capacity == 5
    code, details = await _code(
        net.stub.AllocatePorts(ports("tiny", vpc_id, subnet.subnet_id, [f"vm{i}" for i in range(6)]))
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "10.9.0.0/29" in details
    assert await net.redis.hlen("merak:network:nc:tiny:ports") == 0
    reply = await net.stub.AllocatePorts(
        ports("tiny", vpc_id, subnet.subnet_id, [f"vm{i}" for i in range(5)])
    )
    assert sorted(p.ip for p in reply.ports) == ["10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"]
    code, _ = await _code(net.stub.AllocatePorts(ports("tiny", vpc_id, subnet.subnet_id, ["one-more"])))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A VM that already has its address still gets it back on a full subnet.
    again = await net.stub.AllocatePorts(ports("tiny", vpc_id, subnet.subnet_id, ["vm4"]))
    assert again.ports[0].ip == reply.ports[4].ip


async def test_vni_pool_is_shared_by_every_network_config(
    serve_built: ServeBuilt, redis_client: aioredis.Redis, redis_url: str
) -> None:
    small = await _serve(serve_built, redis_client, _local(redis_url, vni_min=5000, vni_max=5002))
    two = config("a", [vpc("10.1.0.0/16"), vpc("10.2.0.0/16")], groups=[], computes=0)
    await small.stub.NetConfigHandler(op(common_pb2.CREATE, two))
    code, details = await _code(
        small.stub.NetConfigHandler(
            op(common_pb2.CREATE, config("b", [vpc("10.1.0.0/16")] * 2, [], computes=0))
        )
    )
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "VNI" in details
    assert await redis_client.keys("merak:network:nc:b:*") == []
    third = await small.stub.NetConfigHandler(
        op(common_pb2.CREATE, config("c", [vpc("10.1.0.0/16")], [], computes=0))
    )
    a = await small.stub.NetConfigHandler(op(common_pb2.INFO, ident("a")))
    assert sorted([v.vni for v in a.vpcs] + [third.vpcs[0].vni]) == [5000, 5001, 5002]
    await small.stub.NetConfigHandler(op(common_pb2.DELETE, ident("a")))
    reused = await small.stub.NetConfigHandler(
        op(common_pb2.CREATE, config("b", [vpc("10.1.0.0/16")] * 2, [], computes=0))
    )
    assert sorted(v.vni for v in reused.vpcs) == sorted(v.vni for v in a.vpcs)


async def test_two_network_configs_never_share_state(net: Net) -> None:
    same = [vpc("10.1.0.0/16", ("10.1.0.0/24", ""), vpc_id="vpc-x")]
    same[0].subnets[0].subnet_id = "subnet-x"
    for netconfig_id in ("one", "two"):
        await net.stub.NetConfigHandler(
            op(common_pb2.CREATE, config(netconfig_id, list(same), [], computes=1))
        )
    one = await net.stub.AllocatePorts(ports("one", "vpc-x", "subnet-x", ["vm-a", "vm-b"]))
    two = await net.stub.AllocatePorts(ports("two", "vpc-x", "subnet-x", ["vm-b"]))
    assert [p.ip for p in one.ports] == ["10.1.0.2", "10.1.0.3"]
    assert two.ports[0].ip == "10.1.0.2"  # vm-b of config two is another VM
    assert one.ports[0].vni != two.ports[0].vni
    await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident("one")))
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident("two")))
    assert info.vpcs[0].subnets[0].allocated == 1
    still = await net.stub.AllocatePorts(ports("two", "vpc-x", "subnet-x", ["vm-b"]))
    assert still.ports[0].ip == "10.1.0.2"


async def test_port_requests_are_checked(net: Net) -> None:
    created = await net.stub.NetConfigHandler(
        op(common_pb2.CREATE, config(vpcs=[vpc("10.1.0.0/16", ("10.1.0.0/24", ""), ("10.1.1.0/24", ""))]))
    )
    vpc_id = created.vpcs[0].vpc_id
    first, second = (s.subnet_id for s in created.vpcs[0].subnets)
    request = ports(TESTE2E, vpc_id, first, ["vm-0"])
    request.ports.add(vm_id="vm-1", vpc_id=vpc_id, subnet_id="nope")
    code, details = await _code(net.stub.AllocatePorts(request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(
        "ports[1].subnet_id: unknown subnet 'nope'"
    )
    code, details = await _code(net.stub.AllocatePorts(ports(TESTE2E, "other-vpc", first, ["vm-0"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("ports[0].vpc_id")
    code, details = await _code(net.stub.AllocatePorts(ports(TESTE2E, vpc_id, "", ["vm-0"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("ports[0].subnet_id: required")
    code, details = await _code(net.stub.AllocatePorts(ports(TESTE2E, vpc_id, first, [""])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("ports[0].vm_id")
    code, details = await _code(net.stub.AllocatePorts(ports("", vpc_id, first, ["vm-0"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("netconfig_id: required")
    code, _ = await _code(net.stub.AllocatePorts(ports("unknown", vpc_id, first, ["vm-0"])))
    assert code == grpc.StatusCode.NOT_FOUND
    assert await net.redis.hlen(f"merak:network:nc:{TESTE2E}:ports") == 0

    # The subnet alone is enough (ids are unique in a config); a VM keeps the subnet it has.
    reply = await net.stub.AllocatePorts(ports(TESTE2E, "", second, ["vm-0"]))
    assert reply.ports[0].ip == "10.1.1.2" and reply.ports[0].vpc_id == vpc_id
    code, details = await _code(net.stub.AllocatePorts(ports(TESTE2E, vpc_id, first, ["vm-0"])))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "10.1.1.2" in details
    empty = await net.stub.AllocatePorts(network_pb2.AllocatePortsRequest(netconfig_id=TESTE2E))
    assert list(empty.ports) == []


async def test_update_adds_vpcs_subnets_groups_and_refuses_changes(net: Net) -> None:
    code, _ = await _code(net.stub.NetConfigHandler(op(common_pb2.UPDATE, config())))
    assert code == grpc.StatusCode.NOT_FOUND
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    before = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident(TESTE2E)))
    port = await net.stub.AllocatePorts(
        ports(TESTE2E, before.vpcs[0].vpc_id, before.vpcs[0].subnets[0].subnet_id, ["vm-0"])
    )

    grown = config()
    grown.network.vpcs.append(vpc("10.2.0.0/16", ("10.2.0.0/24", ""), ("10.2.1.0/24", "")))
    grown.network.security_groups.add(id="sg-2", name="sg-2")
    grown.network.routers.add(subnets=["10.2.0.0/24"])
    updated = await net.stub.NetConfigHandler(op(common_pb2.UPDATE, grown))
    assert updated.return_message.startswith("UPDATE done")
    kept_vpc, kept_subnet = updated.vpcs[0], updated.vpcs[0].subnets[0]
    assert (kept_vpc.vpc_id, kept_vpc.vni, kept_subnet.subnet_id, kept_subnet.allocated) == (
        before.vpcs[0].vpc_id, before.vpcs[0].vni, before.vpcs[0].subnets[0].subnet_id, 1,
    )  # fmt: skip
    assert len(updated.vpcs) == 2 and len(updated.vpcs[1].subnets) == 2
    assert updated.vpcs[1].vni not in (0, updated.vpcs[0].vni)
    assert updated.security_group_ids == ["sg-1", "sg-2"] and len(updated.routers) == 1
    again = await net.stub.NetConfigHandler(op(common_pb2.UPDATE, grown))
    assert again.vpcs == updated.vpcs
    new_subnet = updated.vpcs[1].subnets[1]
    fresh = await net.stub.AllocatePorts(
        ports(TESTE2E, updated.vpcs[1].vpc_id, new_subnet.subnet_id, ["vm-9"])
    )
    assert fresh.ports[0].ip == "10.2.1.2"
    kept = await net.stub.AllocatePorts(
        ports(TESTE2E, before.vpcs[0].vpc_id, before.vpcs[0].subnets[0].subnet_id, ["vm-0"])
    )
    assert kept.ports[0].ip == port.ports[0].ip

    changed = config()
    changed.network.vpcs[0].vpc_cidr = "10.0.0.0/8"
    code, details = await _code(net.stub.NetConfigHandler(op(common_pb2.UPDATE, changed)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("config.network.vpcs: UPDATE cannot remove")
    changed = network_pb2.InternalNetConfigConfiguration()
    changed.CopyFrom(grown)
    changed.network.vpcs[1].subnets[0].subnet_gw = "10.2.0.9"
    code, details = await _code(net.stub.NetConfigHandler(op(common_pb2.UPDATE, changed)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(
        "config.network.vpcs[1].subnets[0]:"
    )
    delta = config()
    delta.message_type = common_pb2.DELTA
    code, _ = await _code(net.stub.NetConfigHandler(op(common_pb2.UPDATE, delta)))
    assert code == grpc.StatusCode.UNIMPLEMENTED

    await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident(TESTE2E)))
    assert await net.redis.keys("merak:network:nc:*") == []
    assert await net.redis.hlen("merak:network:vni:owners") == 0


async def test_state_survives_a_restart(
    serve_built: ServeBuilt, redis_client: aioredis.Redis, redis_url: str
) -> None:
    first = await _serve(serve_built, redis_client, _local(redis_url))
    created = await first.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    vpc_id, subnet_id = created.vpcs[0].vpc_id, created.vpcs[0].subnets[0].subnet_id
    port = await first.stub.AllocatePorts(ports(TESTE2E, vpc_id, subnet_id, ["vm-0"]))
    gauge = first.registry.get_sample_value("merak_network_objects", {"plugin": "native", "kind": "vpc"})
    assert gauge == 1

    # A restarted service (a process of its own, so a registry of its own) counts what Redis holds.
    second = await _serve(serve_built, redis_client, _local(redis_url))
    assert second.registry.get_sample_value("merak_network_objects", {"plugin": "native", "kind": "vpc"}) == 1
    info = await second.stub.NetConfigHandler(op(common_pb2.INFO, ident(TESTE2E)))
    assert (info.vpcs[0].vpc_id, info.vpcs[0].vni) == (vpc_id, created.vpcs[0].vni)
    assert info.vpcs[0].subnets[0].allocated == 1
    again = await second.stub.AllocatePorts(ports(TESTE2E, vpc_id, subnet_id, ["vm-0"]))
    assert again.ports[0].ip == port.ports[0].ip
    await second.stub.NetConfigHandler(op(common_pb2.DELETE, ident(TESTE2E)))


async def test_metrics_count_objects_allocations_and_plugin_calls(net: Net) -> None:
    def sample(name: str, **labels: str) -> float:
        return net.registry.get_sample_value(name, labels) or 0.0

    vpcs_before = sample("merak_network_objects", plugin="native", kind="vpc")
    subnets_before = sample("merak_network_objects", plugin="native", kind="subnet")
    allocated_before = sample("merak_network_ipam_allocated_total")
    released_before = sample("merak_network_ipam_released_total")
    calls_before = sample("merak_network_plugin_call_seconds_count", plugin="native", operation="apply")
    created = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    assert sample("merak_network_objects", plugin="native", kind="vpc") == vpcs_before + 1
    assert sample("merak_network_objects", plugin="native", kind="subnet") == subnets_before + 1
    assert (
        sample("merak_network_plugin_call_seconds_count", plugin="native", operation="apply")
        == calls_before + 1
    )
    vpc_id, subnet_id = created.vpcs[0].vpc_id, created.vpcs[0].subnets[0].subnet_id
    await net.stub.AllocatePorts(ports(TESTE2E, vpc_id, subnet_id, ["a", "b", "c"]))
    await net.stub.AllocatePorts(ports(TESTE2E, vpc_id, subnet_id, ["a", "d"]))
    assert sample("merak_network_ipam_allocated_total") == allocated_before + 4
    timed = {"plugin": "native", "service": "ipam", "operation": "allocate_ports", "code": "OK"}
    assert sample("merak_control_plane_request_seconds_count", **timed) == 2
    await net.stub.ReleasePorts(network_pb2.ReleasePortsRequest(netconfig_id=TESTE2E, vm_ids=["a", "zz"]))
    assert sample("merak_network_ipam_released_total") == released_before + 1
    await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident(TESTE2E)))
    assert sample("merak_network_objects", plugin="native", kind="vpc") == vpcs_before


Mutation = Callable[[network_pb2.InternalNetConfigConfiguration], object]


def _bad(mutate: Mutation) -> network_pb2.InternalNetConfigConfiguration:
    """A config with two subnets, a rule and a router, with one thing made wrong by `mutate`."""
    cfg = config(
        vpcs=[vpc("10.1.0.0/16", ("10.1.0.0/24", ""), ("10.1.1.0/24", "10.1.1.1"))],
        routers=[network_pb2.InternalRouterInfo(subnets=["10.1.0.0/24"])],
    )
    cfg.network.security_groups[0].rules.add(protocol="tcp", port_range="22")
    mutate(cfg)
    return cfg


def _second_vpc(cfg: network_pb2.InternalNetConfigConfiguration) -> None:
    cfg.network.vpcs.append(vpc("10.2.0.0/16", ("10.2.0.0/24", "")))
    cfg.network.routers[0].subnets.append("10.2.0.0/24")


def _duplicate_vpc_id(cfg: network_pb2.InternalNetConfigConfiguration) -> None:
    cfg.network.vpcs[0].vpc_id = "same"
    cfg.network.vpcs.append(vpc("10.2.0.0/16", vpc_id="same"))


def _bare_vpc(cfg: network_pb2.InternalNetConfigConfiguration) -> None:
    cfg.network.vpcs[0].vpc_cidr = ""
    cfg.network.vpcs[0].ClearField("subnets")


BAD_INPUT: dict[str, tuple[Mutation, str]] = {
    "subnet outside its VPC": (
        lambda c: setattr(c.network.vpcs[0].subnets[1], "subnet_cidr", "10.2.0.0/24"),
        "config.network.vpcs[0].subnets[1].subnet_cidr: 10.2.0.0/24 is outside the VPC CIDR 10.1.0.0/16",
    ),
    "overlapping subnets": (
        lambda c: setattr(c.network.vpcs[0].subnets[1], "subnet_cidr", "10.1.0.128/25"),
        "config.network.vpcs[0].subnets[1].subnet_cidr: 10.1.0.128/25 overlaps subnets[0] (10.1.0.0/24)",
    ),
    "bad subnet CIDR": (
        lambda c: setattr(c.network.vpcs[0].subnets[0], "subnet_cidr", "10.1.0.300/24"),
        "config.network.vpcs[0].subnets[0].subnet_cidr: '10.1.0.300/24' is not a valid CIDR",
    ),
    "bad VPC CIDR": (
        lambda c: setattr(c.network.vpcs[0], "vpc_cidr", "10.1.0.0"),
        "config.network.vpcs[0].vpc_cidr: '10.1.0.0' is not a CIDR",
    ),
    "a subnet CIDR with host bits overlapping another": (
        lambda c: setattr(c.network.vpcs[0].subnets[1], "subnet_cidr", "10.1.0.9/23"),
        "config.network.vpcs[0].subnets[1].subnet_cidr: 10.1.0.0/23 overlaps subnets[0] (10.1.0.0/24)",
    ),
    "no VPC CIDR and no subnet": (
        _bare_vpc,
        "config.network.vpcs[0].vpc_cidr: required when the VPC has no subnets",
    ),
    "gateway outside the subnet": (
        lambda c: setattr(c.network.vpcs[0].subnets[1], "subnet_gw", "10.1.0.1"),
        "config.network.vpcs[0].subnets[1].subnet_gw: 10.1.0.1 is not a host address of 10.1.1.0/24",
    ),
    "gateway on the broadcast address": (
        lambda c: setattr(c.network.vpcs[0].subnets[1], "subnet_gw", "10.1.1.255"),
        "config.network.vpcs[0].subnets[1].subnet_gw: 10.1.1.255 is not a host address of 10.1.1.0/24",
    ),
    "no VPC": (
        lambda c: c.network.ClearField("vpcs"),
        "config.network.vpcs: at least one VPC is required",
    ),
    "router joining two VPCs": (
        _second_vpc,
        "config.network.routers[0].subnets: names subnets of vpcs[0] and vpcs[1]",
    ),
    "missing netconfig_id": (
        lambda c: setattr(c, "netconfig_id", ""),
        "config.netconfig_id: required",
    ),
    "duplicate VPC id": (
        _duplicate_vpc_id,
        "config.network.vpcs[1].vpc_id: 'same' is already the id of vpcs[0]",
    ),
    "unknown plugin": (
        lambda c: setattr(c, "plugin", "x"),
        "config.plugin: unknown plugin 'x'; known: alcor, native",
    ),
    "alcor plugin without a host": (
        lambda c: setattr(c, "plugin", "alcor"),
        "config.services: the alcor plugin needs the Alcor host",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
async def test_bad_input_is_invalid_argument_naming_the_field_and_creates_nothing(
    net: Net, case: str
) -> None:
    mutate, expected = BAD_INPUT[case]
    cfg = _bad(mutate)
    code, details = await _code(net.stub.NetConfigHandler(op(common_pb2.CREATE, cfg)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(expected), details
    assert await net.redis.keys("*") == []


def _router_of_placeholders(cfg: network_pb2.InternalNetConfigConfiguration) -> None:
    cfg.network.routers.add(name="string", subnets=["string"])  # Merak's teste2e


def _no_vpc_cidr(cfg: network_pb2.InternalNetConfigConfiguration) -> None:
    cfg.network.vpcs[0].vpc_cidr = ""
    cfg.network.vpcs[0].subnets[1].subnet_cidr = "10.1.3.0/24"
    cfg.network.vpcs[0].subnets[1].subnet_gw = ""


Reply = network_pb2.ReturnNetworkMessage

# Placeholders of Merak's clients, and what Merak's network ignored: the config is made without them, and
# each is a warning naming its field. (mutation, the warnings, a check of what was made)
LEFT_OUT: dict[str, tuple[Mutation, list[str], Callable[[Reply], bool]]] = {
    "host bits in a CIDR": (
        lambda c: setattr(c.network.vpcs[0], "vpc_cidr", "10.1.2.3/16"),
        ["config.network.vpcs[0].vpc_cidr: '10.1.2.3/16' has host bits set; 10.1.0.0/16 is used"],
        lambda r: r.vpcs[0].vpc_cidr == "10.1.0.0/16",
    ),
    "no VPC CIDR": (
        _no_vpc_cidr,
        [
            "config.network.vpcs[0].vpc_cidr: not given; 10.1.0.0/22, the smallest network holding its "
            "subnets, is used"
        ],
        lambda r: r.vpcs[0].vpc_cidr == "10.1.0.0/22",
    ),
    "unknown group in a rule": (
        lambda c: setattr(c.network.security_groups[0].rules[0], "remote_group_id", "sg-9"),
        [
            "config.network.security_groups[0].rules[0].remote_group_id: unknown security group 'sg-9' "
            "(give the id or name of a security group of this config); rule skipped"
        ],
        lambda r: len(r.security_groups[0].rules) == 0,
    ),
    "port range without protocol": (
        lambda c: setattr(c.network.security_groups[0].rules[0], "protocol", ""),
        [
            "config.network.security_groups[0].rules[0].port_range: a port range needs a protocol; "
            "rule skipped"
        ],
        lambda r: len(r.security_groups[0].rules) == 0,
    ),
    "router naming an unknown subnet": (
        lambda c: c.network.routers[0].subnets.append("string"),
        [
            "config.network.routers[0].subnets[1]: 'string' names no subnet of this config (give its id, "
            "CIDR or gateway IP); skipped"
        ],
        lambda r: len(r.routers) == 1 and len(r.routers[0].subnets) == 1,
    ),
    "router naming no subnet at all": (
        _router_of_placeholders,
        [
            "config.network.routers[1].subnets[0]: 'string' names no subnet of this config (give its id, "
            "CIDR or gateway IP); skipped",
            "config.network.routers[1]: joins no subnet of this config (give subnet ids, CIDRs or gateway "
            "IPs); router skipped",
        ],
        lambda r: len(r.routers) == 1,
    ),
    "a VPC id that is not an id": (
        lambda c: setattr(c.network.vpcs[0], "vpc_id", "10.1.0.0/16"),  # Merak's teste2e
        [
            "config.network.vpcs[0].vpc_id: '10.1.0.0/16' is not an id (1-128 of A-Z, a-z, 0-9, '.', '_', "
            "':', '-', from a letter or digit); an id is assigned"
        ],
        lambda r: r.vpcs[0].vpc_id not in ("", "10.1.0.0/16"),
    ),
    "gateways": (
        lambda c: c.network.gateways.add(id="gw", name="string", ips=["string"]),
        ["config.network.gateways: 1 gateway(s): not emulated (Merak's network did not make them); ignored"],
        lambda r: len(r.vpcs) == 1,
    ),
}


@pytest.mark.parametrize("case", list(LEFT_OUT))
async def test_placeholders_are_left_out_with_a_warning_naming_the_field(net: Net, case: str) -> None:
    mutate, warnings, made = LEFT_OUT[case]
    cfg = _bad(mutate)
    reply = await net.stub.NetConfigHandler(op(common_pb2.CREATE, cfg))
    assert reply.return_message.startswith("CREATE done")
    assert list(reply.warnings) == warnings
    assert made(reply), reply
    # The same request again is the same config (no-op), said again; INFO says nothing of it.
    again = await net.stub.NetConfigHandler(op(common_pb2.CREATE, cfg))
    assert (again.vpcs, list(again.warnings)) == (reply.vpcs, warnings)
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident(TESTE2E)))
    assert info.vpcs == reply.vpcs and not info.warnings


async def test_update_leaves_out_placeholders_too(net: Net) -> None:
    created = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    assert not created.warnings
    grown = config()
    grown.network.vpcs.append(vpc("10.2.0.0/16", ("10.2.0.0/24", "")))
    grown.network.routers.add(subnets=["10.2.0.0/24", "string"])
    updated = await net.stub.NetConfigHandler(op(common_pb2.UPDATE, grown))
    assert updated.return_message.startswith("UPDATE done") and len(updated.routers) == 1
    assert list(updated.warnings) == [
        "config.network.routers[0].subnets[1]: 'string' names no subnet of this config (give its id, CIDR or "
        "gateway IP); skipped"
    ]


async def test_every_request_needs_a_netconfig_id_and_a_known_operation(net: Net) -> None:
    for operation in (common_pb2.INFO, common_pb2.DELETE):
        code, details = await _code(net.stub.NetConfigHandler(op(operation, ident(""))))
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "config.netconfig_id: required")
    code, details = await _code(net.stub.NetConfigHandler(op(common_pb2.PRECREATE, config())))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("operation_type: PRECREATE")
    code, details = await _code(
        net.stub.ReleasePorts(network_pb2.ReleasePortsRequest(netconfig_id="", vm_ids=["a"]))
    )
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "netconfig_id: required")
