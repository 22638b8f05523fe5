"""Network service, per-host address blocks (config.block_prefix): real Redis, real gRPC."""

from __future__ import annotations

import asyncio
import ipaddress
from collections import defaultdict
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from merak.v1 import common_pb2, network_pb2, network_pb2_grpc
from services.network.app import build
from services.network.config import NetworkSettings
from tests.support.plugin import ServeBuilt

NC = "blocks"
VPC = "vpc-1"
SUBNET = "subnet-1"


@pytest.fixture
async def service(serve_built: ServeBuilt, redis_url: str) -> tuple[str, CollectorRegistry]:
    """A network service on a real server over the test's Redis: its address and metrics registry."""
    built = await build(NetworkSettings(host="127.0.0.1", grpc_port=0, redis_url=redis_url))
    return await serve_built(built), built.registry


@pytest.fixture
async def stub(
    service: tuple[str, CollectorRegistry],
) -> AsyncIterator[network_pb2_grpc.MerakNetworkServiceAsyncStub]:
    async with grpc.aio.insecure_channel(service[0]) as channel:
        yield network_pb2_grpc.MerakNetworkServiceStub(channel)


def config(
    subnet: str = "10.1.0.0/24", block_prefix: int = 28, *, netconfig_id: str = NC, plugin: str = ""
) -> network_pb2.InternalNetConfigConfiguration:
    """One VPC 10.1.0.0/16 with one subnet (gateway .1), host blocks of `block_prefix` (0: none)."""
    cfg = network_pb2.InternalNetConfigConfiguration(
        netconfig_id=netconfig_id, message_type=common_pb2.FULL, block_prefix=block_prefix, plugin=plugin
    )
    vpc = cfg.network.vpcs.add(vpc_id=VPC, vpc_cidr="10.1.0.0/16", tenant_id="t", project_id="p")
    vpc.subnets.add(subnet_id=SUBNET, subnet_cidr=subnet)
    return cfg


def op(
    operation: common_pb2.OperationType.ValueType, cfg: network_pb2.InternalNetConfigConfiguration
) -> network_pb2.InternalNetConfigInfo:
    return network_pb2.InternalNetConfigInfo(operation_type=operation, config=cfg)


def ports(*vms: tuple[str, str], subnet_id: str = SUBNET) -> network_pb2.AllocatePortsRequest:
    """AllocatePorts for (vm_id, host) pairs in one subnet."""
    request = network_pb2.AllocatePortsRequest(netconfig_id=NC)
    for vm_id, host in vms:
        request.ports.add(vm_id=vm_id, subnet_id=subnet_id, host=host)
    return request


def on(host: str, *vm_ids: str) -> list[tuple[str, str]]:
    return [(vm_id, host) for vm_id in vm_ids]


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]  # a grpc.aio call object
    return caught.value.code(), caught.value.details() or ""


async def _allocated(stub: network_pb2_grpc.MerakNetworkServiceAsyncStub) -> int:
    info = await stub.NetConfigHandler(
        op(common_pb2.INFO, network_pb2.InternalNetConfigConfiguration(netconfig_id=NC))
    )
    return info.vpcs[0].subnets[0].allocated


def _inside(ip: str, route: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(route)


async def _check_books(redis: aioredis.Redis, block_size: int, slot: int = 0) -> dict[str, str]:
    """The store's block books agree with each other and with the addresses held; returns owners."""
    key = f"merak:network:nc:{NC}:ipam:{slot}"
    owners = {str(b): str(h) for b, h in (await redis.hgetall(f"{key}:owners")).items()}
    hosts = {str(h): str(b) for h, b in (await redis.hgetall(f"{key}:hosts")).items()}
    used = {str(b): int(n) for b, n in (await redis.hgetall(f"{key}:used")).items()}
    assert {(b, h) for h, blocks in hosts.items() for b in blocks.split(",")} == set(owners.items())
    assert await redis.bitcount(f"{key}:blocks") == len(owners)
    for block in owners:
        assert await redis.getbit(f"{key}:blocks", int(block)) == 1
    # A block is owned exactly while an address in it is held, by its host or borrowed.
    in_block: dict[str, int] = defaultdict(int)
    for value in (await redis.hgetall(f"merak:network:nc:{NC}:ports")).values():
        held_slot, _, rest = str(value).partition(":")
        if int(held_slot) == slot:
            in_block[str(int(rest.partition("/")[0]) // block_size)] += 1
    assert used == in_block and set(used) == set(owners)
    return owners


async def test_each_host_gets_addresses_from_its_own_block(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub, redis_client: aioredis.Redis
) -> None:
    await stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    # Interleaved in one batch: each host still gets its own block, claimed in order of first request.
    batch = [(f"{host}-vm{i}", host) for i in range(3) for host in ("h0", "h1", "h2")]
    reply = await stub.AllocatePorts(ports(*batch))
    got = {p.vm_id: (p.ip, p.route) for p in reply.ports}
    # Block 0 (10.1.0.0/28) holds the network address and the gateway: h0's first VM is .2.
    assert [got[f"h0-vm{i}"] for i in range(3)] == [(f"10.1.0.{i + 2}", "10.1.0.0/28") for i in range(3)]
    assert [got[f"h1-vm{i}"] for i in range(3)] == [(f"10.1.0.{i + 16}", "10.1.0.16/28") for i in range(3)]
    assert [got[f"h2-vm{i}"] for i in range(3)] == [(f"10.1.0.{i + 32}", "10.1.0.32/28") for i in range(3)]
    assert all(p.prefix_len == 24 and p.cidr == "10.1.0.0/24" for p in reply.ports)
    assert await _check_books(redis_client, 16) == {"0": "h0", "1": "h1", "2": "h2"}


async def test_a_host_that_fills_its_block_claims_another(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub, redis_client: aioredis.Redis
) -> None:
    await stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    await stub.AllocatePorts(ports(*on("other", "o0")))  # block 0
    first = await stub.AllocatePorts(ports(*on("h", *(f"vm{i}" for i in range(10)))))
    assert {p.route for p in first.ports} == {"10.1.0.16/28"}
    # 6 more fill block 1, the next 4 go to block 2 (block 0 is another host's, though it has room).
    more = await stub.AllocatePorts(ports(*on("h", *(f"vm{i}" for i in range(10, 20)))))
    assert [p.route for p in more.ports] == ["10.1.0.16/28"] * 6 + ["10.1.0.32/28"] * 4
    assert [p.ip for p in more.ports] == [f"10.1.0.{i}" for i in (*range(26, 32), *range(32, 36))]
    assert all(_inside(p.ip, p.route) for p in (*first.ports, *more.ports))
    assert await _check_books(redis_client, 16) == {"0": "other", "1": "h", "2": "h"}
    # An address freed in the host's first block is the next one it gets back.
    await stub.ReleasePorts(network_pb2.ReleasePortsRequest(netconfig_id=NC, vm_ids=["vm3"]))
    again = await stub.AllocatePorts(ports(*on("h", "vm-new")))
    assert (again.ports[0].ip, again.ports[0].route) == ("10.1.0.19", "10.1.0.16/28")


async def test_a_host_borrows_a_32_when_no_block_is_free_and_capacity_is_unchanged(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub,
    redis_client: aioredis.Redis,
    service: tuple[str, CollectorRegistry],
) -> None:
    # A /27 in /29 blocks: 4 blocks of 8; 29 addresses for VMs, as without blocks.
    created = await stub.NetConfigHandler(op(common_pb2.CREATE, config("10.1.0.0/27", 29)))
    assert created.vpcs[0].subnets[0].capacity == 29
    owners = await stub.AllocatePorts(ports(*((f"{h}-vm", h) for h in ("h0", "h1", "h2", "h3"))))
    assert [p.route for p in owners.ports] == ["10.1.0.0/29", "10.1.0.8/29", "10.1.0.16/29", "10.1.0.24/29"]
    # Every block is owned: h4 borrows the lowest free address (in h0's block), h0 keeps its block.
    borrowed = await stub.AllocatePorts(ports(("h4-vm", "h4"), ("h0-vm2", "h0")))
    assert [(p.ip, p.route) for p in borrowed.ports] == [
        ("10.1.0.3", "10.1.0.3/32"),
        ("10.1.0.4", "10.1.0.0/29"),
    ]
    # The rest of the subnet, borrowed and not: exactly the capacity, then RESOURCE_EXHAUSTED.
    rest = [(f"h{i % 6}-more{i}", f"h{i % 6}") for i in range(29 - 6)]
    filled = await stub.AllocatePorts(ports(*rest))
    ips = [p.ip for p in (*owners.ports, *borrowed.ports, *filled.ports)]
    assert len(set(ips)) == 29
    block_of = {f"h{i}": f"10.1.0.{8 * i}/29" for i in range(4)}  # h4 and h5 own none
    for p in filled.ports:
        own = block_of.get(p.vm_id.partition("-")[0], "")
        assert p.route == (own if own and _inside(p.ip, own) else f"{p.ip}/32"), p
    assert any(p.route.endswith("/32") for p in filled.ports if p.vm_id.startswith("h0-"))
    borrowed_count = sum(p.route.endswith("/32") for p in (*borrowed.ports, *filled.ports))
    assert service[1].get_sample_value("merak_network_ipam_borrowed_total") == borrowed_count
    code, details = await _code(stub.AllocatePorts(ports(("late", "h0"))))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "10.1.0.0/27" in details
    assert await _allocated(stub) == 29
    await _check_books(redis_client, 8)


async def test_retries_are_idempotent_and_a_vm_keeps_its_host(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub, redis_client: aioredis.Redis
) -> None:
    await stub.NetConfigHandler(op(common_pb2.CREATE, config("10.1.0.0/27", 29)))
    batch = [(f"{h}-vm{i}", h) for h in ("h0", "h1", "h2", "h3", "h4") for i in range(2)]
    first = await stub.AllocatePorts(ports(*batch))
    assert "/32" in first.ports[-1].route  # h4 borrowed
    for _ in range(2):
        again = await stub.AllocatePorts(ports(*reversed(batch)))
        assert list(reversed(again.ports)) == list(first.ports)
    assert await _allocated(stub) == 10
    books = await _check_books(redis_client, 8)

    code, details = await _code(stub.AllocatePorts(ports(("h0-vm0", "h1"))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.startswith("ports[0].host: VM 'h0-vm0' holds 10.1.0.2 on host 'h0'"), details
    code, details = await _code(stub.AllocatePorts(ports(("new", "h0"), ("new", "h1"))))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith("ports[1].host"), details
    assert await _allocated(stub) == 10 and await _check_books(redis_client, 8) == books


async def test_release_frees_addresses_and_empty_blocks(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub, redis_client: aioredis.Redis
) -> None:
    await stub.NetConfigHandler(op(common_pb2.CREATE, config("10.1.0.0/27", 29)))
    await stub.AllocatePorts(ports(*on("h0", "a0", "a1"), *on("h1", "b0"), *on("h2", "c0"), *on("h3", "d0")))
    borrowed = await stub.AllocatePorts(ports(*on("h4", "e0")))
    assert borrowed.ports[0].route == "10.1.0.4/32"  # in h0's block
    # h0 lets go of its own VMs: its block still holds h4's borrowed address, so h0 keeps it.
    released = await stub.ReleasePorts(network_pb2.ReleasePortsRequest(netconfig_id=NC, vm_ids=["a0", "a1"]))
    assert released.released == 2
    assert (await _check_books(redis_client, 8))["0"] == "h0"
    # Once nothing is held in it, the block goes back to the pool, and the next host claims it.
    await stub.ReleasePorts(network_pb2.ReleasePortsRequest(netconfig_id=NC, vm_ids=["e0", "e0", "nobody"]))
    assert "0" not in await _check_books(redis_client, 8)
    claimed = await stub.AllocatePorts(ports(*on("h5", "f0")))
    assert (claimed.ports[0].ip, claimed.ports[0].route) == ("10.1.0.2", "10.1.0.0/29")
    everyone = ["b0", "c0", "d0", "f0"]
    await stub.ReleasePorts(network_pb2.ReleasePortsRequest(netconfig_id=NC, vm_ids=everyone))
    key = f"merak:network:nc:{NC}:ipam:0"
    assert await _check_books(redis_client, 8) == {}
    assert (
        await redis_client.hgetall(f"{key}:hosts") == {} and await redis_client.hgetall(f"{key}:used") == {}
    )
    assert await redis_client.bitcount(f"{key}:blocks") == 0
    await stub.NetConfigHandler(
        op(common_pb2.DELETE, network_pb2.InternalNetConfigConfiguration(netconfig_id=NC))
    )
    assert await redis_client.keys("merak:network:nc:*") == []


async def test_two_hosts_never_share_a_block_under_concurrent_batches(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub, redis_client: aioredis.Redis
) -> None:
    # A /22 in /27 blocks: 32 blocks; 12 hosts x 40 VMs need 2 blocks each, 24 in all.
    await stub.NetConfigHandler(op(common_pb2.CREATE, config("10.1.0.0/22", 27)))
    hosts = [f"vhost-{h}" for h in range(12)]
    batches = [
        ports(*((f"{host}-vm{i}", host) for host in hosts[h::3] for i in range(b, 40, 4)))
        for h in range(3)
        for b in range(4)
    ]
    replies = await asyncio.gather(*(stub.AllocatePorts(batch) for batch in batches))
    allocations = [p for reply in replies for p in reply.ports]
    assert len(allocations) == 480 and len({p.ip for p in allocations}) == 480
    blocks_of: dict[str, set[str]] = defaultdict(set)
    for p in allocations:
        assert p.route.endswith("/27") and _inside(p.ip, p.route)
        blocks_of[p.vm_id.partition("-vm")[0]].add(p.route)
    assert all(len(blocks) == 2 for blocks in blocks_of.values())
    every = [b for blocks in blocks_of.values() for b in blocks]
    assert len(every) == len(set(every)) == 24
    owners = await _check_books(redis_client, 32)
    assert len(owners) == 24 and {h: 2 for h in hosts} == {h: list(owners.values()).count(h) for h in hosts}


async def test_blocks_are_off_by_default(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub, redis_client: aioredis.Redis
) -> None:
    await stub.NetConfigHandler(op(common_pb2.CREATE, config(block_prefix=0)))
    # A host, when given, is checked and otherwise changes nothing: lowest free address, no route.
    reply = await stub.AllocatePorts(ports(("a", "h0"), ("b", "h1"), ("c", "")))
    assert [(p.ip, p.route) for p in reply.ports] == [("10.1.0.2", ""), ("10.1.0.3", ""), ("10.1.0.4", "")]
    again = await stub.AllocatePorts(ports(("a", "h9")))
    assert (again.ports[0].ip, again.ports[0].route) == ("10.1.0.2", "")
    assert await redis_client.hgetall(f"merak:network:nc:{NC}:ports") == {"a": "0:2", "b": "0:3", "c": "0:4"}
    assert sorted(await redis_client.keys(f"merak:network:nc:{NC}:ipam:*")) == [
        f"merak:network:nc:{NC}:ipam:0"
    ]
    code, details = await _code(stub.AllocatePorts(ports(("d", "bad host"))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("ports[0].host"), details
    released = await stub.ReleasePorts(network_pb2.ReleasePortsRequest(netconfig_id=NC, vm_ids=["a", "b"]))
    assert released.released == 2 and await _allocated(stub) == 1


async def test_update_adds_subnets_with_blocks_and_cannot_change_them(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub, redis_client: aioredis.Redis
) -> None:
    await stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    grown = config()
    grown.network.vpcs[0].subnets.add(subnet_id="subnet-2", subnet_cidr="10.1.1.0/24")
    await stub.NetConfigHandler(op(common_pb2.UPDATE, grown))
    reply = await stub.AllocatePorts(ports(("a", "h0"), subnet_id="subnet-2"))
    assert (reply.ports[0].ip, reply.ports[0].route) == ("10.1.1.2", "10.1.1.0/28")
    assert await _check_books(redis_client, 16, slot=1) == {"0": "h0"}
    for block_prefix in (0, 27):
        changed = config(block_prefix=block_prefix)
        changed.network.vpcs[0].subnets.add(subnet_id="subnet-2", subnet_cidr="10.1.1.0/24")
        code, details = await _code(stub.NetConfigHandler(op(common_pb2.UPDATE, changed)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(
            "config.block_prefix: UPDATE cannot change"
        ), details
    code, _ = await _code(stub.NetConfigHandler(op(common_pb2.CREATE, config(block_prefix=27))))
    assert code == grpc.StatusCode.ALREADY_EXISTS


BAD_CONFIGS = {
    "a block longer than /29": (config(block_prefix=30), "config.block_prefix: /30: a block is /8 to /29"),
    "a block larger than a subnet": (
        config("10.1.0.0/28", 26),
        "config.block_prefix: /26 blocks do not fit in config.network.vpcs[0].subnets[0] (10.1.0.0/28)",
    ),
    "blocks with the ovn plugin": (
        config(plugin="ovn"),
        "config.block_prefix: only the native plugin gives hosts address blocks",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
async def test_a_bad_block_prefix_is_invalid_argument_and_creates_nothing(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub, redis_client: aioredis.Redis, case: str
) -> None:
    cfg, expected = BAD_CONFIGS[case]
    code, details = await _code(stub.NetConfigHandler(op(common_pb2.CREATE, cfg)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(expected), details
    assert await redis_client.keys("*") == []


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("", "ports[1].host: required: subnet 'subnet-1' gives each host its own /28 address blocks"),
        ("vhost 1", "ports[1].host: only letters, digits"),
        ("h" * 65, "ports[1].host: at most 64 characters"),
    ],
)
async def test_a_bad_host_is_invalid_argument_and_allocates_nothing(
    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub,
    redis_client: aioredis.Redis,
    host: str,
    expected: str,
) -> None:
    await stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    code, details = await _code(stub.AllocatePorts(ports(("a", "h0"), ("b", host))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(expected), details
    assert await redis_client.keys(f"merak:network:nc:{NC}:ipam:0:*") == []
    assert await _allocated(stub) == 0
