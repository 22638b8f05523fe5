"""Network service, alcor plugin: every request of CREATE → INFO → DELETE against a fake Alcor."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from merak.v1 import common_pb2, network_pb2, network_pb2_grpc
from merak_tools.alcor_standin import FailRule, FakeAlcor
from services.network.app import build
from services.network.config import NetworkSettings
from tests.support import free_port
from tests.support.plugin import ServeBuilt

NC = "alcor-net-1"
PROJECT = "123456789"
TENANT = "tenant-a"


@dataclass
class AlcorNet:
    """A network service whose configs go to a fake Alcor with one listener per Alcor service."""

    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub
    redis: aioredis.Redis
    alcor: FakeAlcor
    registry: CollectorRegistry


@dataclass
class AlcorNetworkService:
    """A served network service: its stub, and its metrics."""

    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub
    registry: CollectorRegistry


@pytest.fixture
def alcor() -> Iterator[FakeAlcor]:
    fake = FakeAlcor(services=("vpc", "subnet", "router", "node", "sg"))
    try:
        yield fake
    finally:
        fake.stop()


def _local(redis_url: str, **settings: Any) -> NetworkSettings:
    """A network service on 127.0.0.1:0 over the test's Redis."""
    return NetworkSettings(host="127.0.0.1", grpc_port=0, redis_url=redis_url, **settings)


def _settings(alcor: FakeAlcor, redis_url: str) -> NetworkSettings:
    # The plugin's per-service ports point at the fake's listeners; the config names only the host.
    return _local(
        redis_url,
        control_plane_allow=alcor.allow_entries,
        alcor_vpc_port=alcor.port_of("vpc"), alcor_subnet_port=alcor.port_of("subnet"),
        alcor_router_port=alcor.port_of("router"), alcor_node_port=alcor.port_of("node"),
        alcor_sg_port=alcor.port_of("sg"), alcor_timeout=5.0,
    )  # fmt: skip


async def _serve(serve_built: ServeBuilt, settings: NetworkSettings) -> AlcorNetworkService:
    built = await build(settings)
    address = await serve_built(built)
    return AlcorNetworkService(
        network_pb2_grpc.MerakNetworkServiceStub(grpc.aio.insecure_channel(address)), built.registry
    )


@pytest.fixture
async def net(
    serve_built: ServeBuilt, redis_client: aioredis.Redis, redis_url: str, alcor: FakeAlcor
) -> AsyncIterator[AlcorNet]:
    served = await _serve(serve_built, _settings(alcor, redis_url))
    yield AlcorNet(served.stub, redis_client, alcor, served.registry)


def config(host: str = "127.0.0.1", computes: int = 2) -> network_pb2.InternalNetConfigConfiguration:
    """Merak's service entries (alcorIp names the host), 1 VPC with 2 subnets, 2 groups, 1 router."""
    cfg = network_pb2.InternalNetConfigConfiguration(netconfig_id=NC, message_type=common_pb2.FULL)
    cfg.services.add(id="1", name="alcorIp", cmd="alcorIp", url=host, where_to_run="NETWORK")
    cfg.services.add(
        id="3", name="alcor-nodemanager", cmd="curl", url="http://x/nodes/bulk", where_to_run="NETWORK"
    )
    vpc = cfg.network.vpcs.add(tenant_id=TENANT, project_id=PROJECT, vpc_cidr="10.1.0.0/16")
    vpc.subnets.add(subnet_cidr="10.1.0.0/24", number_vms=10)
    vpc.subnets.add(subnet_cidr="10.1.1.0/24", subnet_gw="10.1.1.254", number_vms=10)
    web = cfg.network.security_groups.add(id="sg-1", name="web")
    web.rules.add(
        protocol="tcp", port_range="22", remote_ip_prefix="0.0.0.0/0", direction="ingress", name="ssh"
    )
    db = cfg.network.security_groups.add(name="db")
    db.rules.add(protocol="tcp", port_range="5432", remote_group_id="sg-1")
    cfg.network.routers.add(name="r1", subnets=["10.1.0.0/24", "10.1.1.254"])
    for i in range(computes):
        cfg.computes.add(
            id=f"node-{i}", name=f"vhost-{i}", datapath_ip=f"10.200.0.{i + 2}", mac=f"02:00:00:00:00:0{i}",
            veth=f"eth{i}", container_ip=f"10.244.0.{i + 2}",
        )  # fmt: skip
    return cfg


def op(operation: common_pb2.OperationType.ValueType, cfg: network_pb2.InternalNetConfigConfiguration) -> Any:
    return network_pb2.InternalNetConfigInfo(operation_type=operation, config=cfg)


def ident(netconfig_id: str = NC) -> network_pb2.InternalNetConfigConfiguration:
    return network_pb2.InternalNetConfigConfiguration(netconfig_id=netconfig_id)


def sent(alcor: FakeAlcor, start: int = 0) -> list[tuple[str, str, str, Any]]:
    return [(r.service, r.method, r.path, r.body) for r in alcor.state.requests[start:]]


async def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]  # a grpc.aio call object
    return caught.value.code(), caught.value.details() or ""


P = f"/project/{PROJECT}"


def _create_requests(reply: network_pb2.ReturnNetworkMessage) -> list[tuple[str, str, str, Any]]:
    """What Merak's VnetCreate sent, fixed: real tenant, gateway, rules, router network id, ids kept."""
    (vpc,) = reply.vpcs
    s0, s1 = vpc.subnets
    web, db = reply.security_groups
    (router,) = reply.routers
    hosts = [
        {"data-path-ip": f"10.200.0.{i + 2}", "local_ip": f"10.244.0.{i + 2}",
         "mac_address": f"02:00:00:00:00:0{i}", "node_id": f"node-{i}", "node_name": f"vhost-{i}",
         "server_port": 50001, "veth": f"eth{i}"}
        for i in range(2)
    ]  # fmt: skip
    return [
        ("node", "POST", "/nodes/bulk", {"host_infos": hosts}),
        ("vpc", "POST", f"{P}/vpcs", {"network": {
            "admin_state_up": True, "revision_number": 0, "cidr": "10.1.0.0/16", "default": True,
            "description": "vpc", "dns_domain": "domain", "id": "", "is_default": True, "mtu": 1400,
            "name": f"merak-{NC}-vpc0", "port_security_enabled": True, "project_id": PROJECT,
            "tenant_id": TENANT,
        }}),
        ("subnet", "POST", f"{P}/subnets", {"subnet": {
            "cidr": "10.1.0.0/24", "id": "", "name": f"merak-{NC}-vpc0-subnet0", "ip_version": 4,
            "network_id": vpc.vpc_id, "gateway_ip": "10.1.0.1", "tenant_id": TENANT,
        }}),
        ("subnet", "POST", f"{P}/subnets", {"subnet": {
            "cidr": "10.1.1.0/24", "id": "", "name": f"merak-{NC}-vpc0-subnet1", "ip_version": 4,
            "network_id": vpc.vpc_id, "gateway_ip": "10.1.1.254", "tenant_id": TENANT,
        }}),
        ("sg", "POST", f"{P}/security-groups", {"security_group": {
            "id": "sg-1", "name": "web", "description": f"merak network config {NC}", "project_id": PROJECT,
            "tenant_id": TENANT, "security_group_rules": [],
        }}),
        ("sg", "POST", f"{P}/security-groups", {"security_group": {
            "name": "db", "description": f"merak network config {NC}", "project_id": PROJECT,
            "tenant_id": TENANT, "security_group_rules": [],
        }}),
        ("sg", "POST", f"{P}/security-group-rules", {"security_group_rule": {
            "security_group_id": "sg-1", "direction": "ingress", "ethertype": "IPv4", "project_id": PROJECT,
            "tenant_id": TENANT, "name": "ssh", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
            "remote_ip_prefix": "0.0.0.0/0",
        }}),
        ("sg", "POST", f"{P}/security-group-rules", {"security_group_rule": {
            "security_group_id": db.id, "direction": "ingress", "ethertype": "IPv4", "project_id": PROJECT,
            "tenant_id": TENANT, "protocol": "tcp", "port_range_min": 5432, "port_range_max": 5432,
            "remote_group_id": web.id,
        }}),
        ("router", "POST", f"{P}/routers", {"router": {
            "admin_state_up": True, "description": "router", "distributed": True,
            "external_gateway_info": {
                "enable_snat": True, "external_fixed_ips": [], "network_id": vpc.vpc_id,
            },
            "ha": True, "id": "", "name": "r1", "project_id": PROJECT, "status": "BUILD", "tenant_id": TENANT,
        }}),
        ("router", "PUT", f"{P}/routers/{router.id}/add_router_interface", {"subnet_id": s0.subnet_id}),
        ("router", "PUT", f"{P}/routers/{router.id}/add_router_interface", {"subnet_id": s1.subnet_id}),
    ]  # fmt: skip


def _delete_requests(reply: network_pb2.ReturnNetworkMessage) -> list[tuple[str, str, str, Any]]:
    """Alcor's order (alcor-reference §4): interfaces, routers, subnets, VPCs, rules, groups, nodes last."""
    (vpc,) = reply.vpcs
    s0, s1 = vpc.subnets
    web, db = reply.security_groups
    (router,) = reply.routers
    return [
        ("router", "PUT", f"{P}/routers/{router.id}/remove_router_interface", {"subnet_id": s0.subnet_id}),
        ("router", "PUT", f"{P}/routers/{router.id}/remove_router_interface", {"subnet_id": s1.subnet_id}),
        ("router", "DELETE", f"{P}/routers/{router.id}", None),
        ("subnet", "DELETE", f"{P}/subnets/{s0.subnet_id}", None),
        ("subnet", "DELETE", f"{P}/subnets/{s1.subnet_id}", None),
        ("vpc", "DELETE", f"{P}/vpcs/{vpc.vpc_id}", None),
        ("sg", "DELETE", f"{P}/security-group-rules/{web.rules[0].id}", None),
        ("sg", "DELETE", f"{P}/security-group-rules/{db.rules[0].id}", None),
        ("sg", "DELETE", f"{P}/security-groups/{web.id}", None),
        ("sg", "DELETE", f"{P}/security-groups/{db.id}", None),
        ("node", "DELETE", "/nodes/node-0", None),
        ("node", "DELETE", "/nodes/node-1", None),
    ]


async def test_full_cycle_sends_every_request_in_order(net: AlcorNet) -> None:
    calls_before = net.registry.get_sample_value(
        "merak_network_plugin_call_seconds_count", {"plugin": "alcor", "operation": "create_subnet"}
    )
    created = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    assert created.return_code == common_pb2.OK and created.plugin == "alcor"
    assert sent(net.alcor) == _create_requests(created)
    (vpc,) = created.vpcs
    assert (
        vpc.vpc_id in net.alcor.state.vpcs
        and vpc.vni == net.alcor.state.vpcs[vpc.vpc_id]["provider:segmentation_id"]
    )
    assert [s.subnet_id for s in vpc.subnets] == list(net.alcor.state.subnets)
    assert created.security_group_ids[0] == "sg-1" and created.security_group_ids[1] in net.alcor.state.groups
    assert [r.id for g in created.security_groups for r in g.rules] == list(net.alcor.state.rules)
    assert list(created.routers[0].subnets) == [s.subnet_id for s in vpc.subnets]
    assert (
        net.registry.get_sample_value(
            "merak_network_plugin_call_seconds_count", {"plugin": "alcor", "operation": "create_subnet"}
        )
        == (calls_before or 0) + 2
    )

    # INFO and a repeated CREATE come from Redis: no request to Alcor.
    count = len(net.alcor.state.requests)
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident()))
    assert info.vpcs == created.vpcs and info.security_groups == created.security_groups
    # INFO shows the calls the CREATE made into Alcor, in order, timed (a scenario's results list them).
    assert len(info.calls) == len(_create_requests(created)) == count
    assert [c.operation for c in info.calls][:2] == ["register_nodes", "create_vpc"]
    assert {c.code for c in info.calls} <= {"200", "201"}
    assert all(c.seconds > 0 and abs(c.at - time.time()) < 300 for c in info.calls)
    again = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    assert again.vpcs == created.vpcs
    assert len(net.alcor.state.requests) == count

    code, details = await _code(
        net.stub.AllocatePorts(
            network_pb2.AllocatePortsRequest(netconfig_id=NC, ports=[network_pb2.PortRequest(vm_id="v")])
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "with the alcor plugin, ports come from Alcor through the agent's PRECREATE" in details

    deleted = await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident()))
    assert deleted.return_code == common_pb2.OK
    assert sent(net.alcor, count) == _delete_requests(created)
    assert net.alcor.state.objects() == 0
    assert await net.redis.keys("*") == []
    again_deleted = await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident()))
    assert again_deleted.return_code == common_pb2.OK
    assert len(net.alcor.state.requests) == count + 12


async def test_a_failure_part_way_undoes_what_was_made_and_stores_nothing(net: AlcorNet) -> None:
    net.alcor.state.fail_rules.append(FailRule("POST", "/routers", 500, "RouterUnavailable"))
    code, details = await _code(net.stub.NetConfigHandler(op(common_pb2.CREATE, config())))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert f"POST http://127.0.0.1:{net.alcor.port_of('router')}{P}/routers answered 500" in details
    assert "RouterUnavailable" in details  # Alcor's message
    undo = [(service, method) for service, method, _, _ in sent(net.alcor, 9)]
    assert (
        undo
        == [("subnet", "DELETE"), ("subnet", "DELETE"), ("vpc", "DELETE")]
        + [("sg", "DELETE")] * 4
        + [("node", "DELETE")] * 2
    )
    assert net.alcor.state.objects() == 0
    assert await net.redis.keys("*") == []


async def test_alcor_4xx_is_failed_precondition_with_its_message(net: AlcorNet) -> None:
    net.alcor.state.fail_rules.append(FailRule("POST", "/security-groups", 412, "SecurityGroupRequired"))
    code, details = await _code(net.stub.NetConfigHandler(op(common_pb2.CREATE, config())))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "answered 412 (SecurityGroupRequired)" in details  # Alcor's error code, not its words
    assert net.alcor.state.objects() == 0
    assert await net.redis.keys("*") == []


async def test_alcor_down_is_unavailable(
    serve_built: ServeBuilt, redis_client: aioredis.Redis, redis_url: str
) -> None:
    port = free_port()
    allow = f"127.0.0.1:{port}"
    stub = (await _serve(serve_built, _local(redis_url, alcor_timeout=2.0, control_plane_allow=allow))).stub
    code, details = await _code(
        stub.NetConfigHandler(op(common_pb2.CREATE, config(f"http://127.0.0.1:{port}")))
    )
    assert code == grpc.StatusCode.UNAVAILABLE and "POST http://127.0.0.1:" in details
    assert await redis_client.keys("*") == []


async def test_a_failed_delete_keeps_the_state_and_a_retry_goes_on_where_it_stopped(net: AlcorNet) -> None:
    created = await net.stub.NetConfigHandler(op(common_pb2.CREATE, config()))
    start = len(net.alcor.state.requests)
    net.alcor.state.fail_rules.append(FailRule("DELETE", "/vpcs/", 500, "SubnetsNotEmptyException"))
    code, details = await _code(net.stub.NetConfigHandler(op(common_pb2.DELETE, ident())))
    assert code == grpc.StatusCode.UNAVAILABLE and "SubnetsNotEmptyException" in details
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident()))
    assert info.vpcs == created.vpcs
    retry = len(net.alcor.state.requests)
    await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident()))
    expected = _delete_requests(created)
    assert sent(net.alcor, start) == expected[:6] + expected[5:]
    assert sent(net.alcor, retry) == expected[5:]
    assert net.alcor.state.objects() == 0
    assert await net.redis.keys("*") == []


async def test_update_makes_only_what_is_new(net: AlcorNet) -> None:
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, config(computes=0)))
    assert all(service != "node" for service, *_ in sent(net.alcor))  # no bulk call without nodes
    start = len(net.alcor.state.requests)
    grown = config(computes=1)
    grown.network.vpcs[0].subnets.add(subnet_cidr="10.1.2.0/24")
    updated = await net.stub.NetConfigHandler(op(common_pb2.UPDATE, grown))
    assert [(s, m, p) for s, m, p, _ in sent(net.alcor, start)] == [
        ("node", "POST", "/nodes/bulk"),
        ("subnet", "POST", f"{P}/subnets"),
    ]
    assert len(updated.vpcs[0].subnets) == 3 and len(updated.computes) == 1
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident()))
    assert [c.operation for c in info.calls][-2:] == ["register_nodes", "create_subnet"]
    await net.stub.NetConfigHandler(op(common_pb2.DELETE, ident()))
    assert net.alcor.state.objects() == 0


async def test_a_url_with_a_port_sends_every_call_there(serve_built: ServeBuilt, redis_url: str) -> None:
    gateway = FakeAlcor()  # one port for every service, as Alcor's API gateway
    try:
        stub = (await _serve(serve_built, _local(redis_url, control_plane_allow=gateway.allow_entries))).stub
        explicit = config(gateway.url)
        explicit.plugin = "alcor"
        created = await stub.NetConfigHandler(op(common_pb2.CREATE, explicit))
        assert [(m, p) for _, m, p, _ in sent(gateway)] == [
            (m, p) for _, m, p, _ in _create_requests(created)
        ]
        await stub.NetConfigHandler(op(common_pb2.DELETE, ident()))
        assert gateway.state.objects() == 0
    finally:
        gateway.stop()


def _small_subnet(cfg: network_pb2.InternalNetConfigConfiguration) -> None:
    cfg.network.ClearField("routers")
    cfg.network.vpcs[0].subnets[0].subnet_cidr = "10.1.0.0/29"


Mutation = Callable[[network_pb2.InternalNetConfigConfiguration], object]

ALCOR_BAD_INPUT: dict[str, tuple[Mutation, str]] = {
    "subnet prefix Alcor refuses": (
        _small_subnet,
        "config.network.vpcs[0].subnets[0].subnet_cidr: 10.1.0.0/29: Alcor takes subnets from /16 to /28",
    ),
    "no project": (
        lambda c: setattr(c.network.vpcs[0], "project_id", ""),
        "config.network.vpcs[0].project_id: required by the alcor plugin",
    ),
    "a group named default": (
        lambda c: setattr(c.network.security_groups[1], "name", "default"),
        "config.network.security_groups[1].name: 'default' is the name Alcor gives",
    ),
    "a bad Alcor URL": (
        lambda c: setattr(c.services[0], "url", "ftp://alcor"),
        "config.services[0].url: 'ftp://alcor' is not an Alcor host",
    ),
}


@pytest.mark.parametrize("case", list(ALCOR_BAD_INPUT))
async def test_what_alcor_would_refuse_is_refused_before_any_call(net: AlcorNet, case: str) -> None:
    mutate, expected = ALCOR_BAD_INPUT[case]
    cfg = config()
    mutate(cfg)
    code, details = await _code(net.stub.NetConfigHandler(op(common_pb2.CREATE, cfg)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(expected), details
    assert net.alcor.state.requests == []
    assert await net.redis.keys("*") == []
