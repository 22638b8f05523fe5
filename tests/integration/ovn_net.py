"""What the ovn plugin's tests share: a network service on a real server and a real NB, configs, and
NB read from outside the product (ovn-nbctl through the fixture)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from merak import ovs
from merak.v1 import common_pb2, network_pb2, network_pb2_grpc
from merak_tools.ovncentral import RunningCentral
from services.network.app import build
from services.network.config import NetworkSettings
from services.network.manager import NetworkManager
from tests.support.plugin import ServeBuilt

PROJECT = "p-1"


@dataclass
class Net:
    """A network service on a real server, and what a test needs to look behind it."""

    stub: network_pb2_grpc.MerakNetworkServiceAsyncStub
    manager: NetworkManager
    registry: CollectorRegistry


async def serve(
    serve_built: ServeBuilt,
    redis_url: str,
    *,
    ovn: RunningCentral | None = None,
    allow: str = "",
    **settings: Any,
) -> Net:
    """The network service built by its composition root, on 127.0.0.1:0 over the test's Redis; a config
    may name `ovn`'s databases and the endpoints in `allow` (MERAK_CONTROL_PLANE_ALLOW)."""
    entries = [allow, *((ovn.nb, "" if ovn.nb_only else ovn.sb) if ovn is not None else ())]
    settings.setdefault("control_plane_allow", ",".join(e for e in entries if e))
    built = await build(NetworkSettings(host="127.0.0.1", grpc_port=0, redis_url=redis_url, **settings))
    address = await serve_built(built)
    channel = grpc.aio.insecure_channel(address)
    return Net(network_pb2_grpc.MerakNetworkServiceStub(channel), built.root, built.registry)


def config(
    netconfig_id: str,
    vpcs: int = 2,
    subnets: int = 2,
    *,
    nb: str = "",
    sb: str = "",
    base: int = 10,
    groups: bool = True,
) -> network_pb2.InternalNetConfigConfiguration:
    """`vpcs` VPCs of `subnets` /24 subnets each (10.<base+v>.<s>.0/24), ids vpc-<v> and sn-<v>-<s>; with
    `groups`, sg-web (tcp 80 from anywhere, ICMP from its own members, all out) and sg-db (tcp 5432 from
    sg-web's members, nothing out)."""
    cfg = network_pb2.InternalNetConfigConfiguration(
        netconfig_id=netconfig_id, plugin="ovn", ovn_nb=nb, ovn_sb=sb, message_type=common_pb2.FULL
    )
    for v in range(vpcs):
        vpc = cfg.network.vpcs.add(
            vpc_id=f"vpc-{v}", tenant_id=PROJECT, project_id=PROJECT, vpc_cidr=f"10.{base + v}.0.0/16"
        )
        for s in range(subnets):
            vpc.subnets.add(subnet_id=f"sn-{v}-{s}", subnet_cidr=f"10.{base + v}.{s}.0/24", number_vms=10)
    if groups:
        web = cfg.network.security_groups.add(id="sg-web", name="web")
        web.rules.add(
            id="r-http", direction="ingress", protocol="tcp", port_range="80", remote_ip_prefix="0.0.0.0/0"
        )
        web.rules.add(id="r-icmp", direction="ingress", protocol="icmp", remote_group_id="sg-web")
        web.rules.add(id="r-out", direction="egress")
        db = cfg.network.security_groups.add(id="sg-db", name="db")
        db.rules.add(
            id="r-pg", direction="ingress", protocol="tcp", port_range="5432", remote_group_id="sg-web"
        )
    return cfg


def op(
    operation: common_pb2.OperationType.ValueType, cfg: network_pb2.InternalNetConfigConfiguration
) -> network_pb2.InternalNetConfigInfo:
    return network_pb2.InternalNetConfigInfo(operation_type=operation, config=cfg)


def ident(netconfig_id: str) -> network_pb2.InternalNetConfigConfiguration:
    return network_pb2.InternalNetConfigConfiguration(netconfig_id=netconfig_id)


def allocate(netconfig_id: str, *ports: network_pb2.PortRequest) -> network_pb2.AllocatePortsRequest:
    return network_pb2.AllocatePortsRequest(netconfig_id=netconfig_id, ports=ports)


def by_name(listed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rows by their name."""
    return {str(row["name"]): row for row in listed}


def port(vm_id: str, v: int, s: int, *groups: str) -> network_pb2.PortRequest:
    return network_pb2.PortRequest(
        vm_id=vm_id, vpc_id=f"vpc-{v}", subnet_id=f"sn-{v}-{s}", security_group_ids=groups
    )


async def failure(call: object) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]  # a grpc.aio call object
    return caught.value.code(), caught.value.details() or ""


def rows(central: RunningCentral, table: str, netconfig_id: str = "") -> list[dict[str, Any]]:
    """The rows of an NB table (those of one network config, by external_ids), as ovn-nbctl lists them."""
    where = (
        ["find", table, f"external_ids:merak-netconfig={netconfig_id}"] if netconfig_id else ["list", table]
    )
    listed = json.loads(central.nbctl("--format=json", *where))
    return [dict(zip(listed["headings"], (_plain(v) for v in row), strict=True)) for row in listed["data"]]


def as_list(value: Any) -> list[Any]:
    """A set column's value as a list (ovsdb's JSON writes a one-element set as the element)."""
    return value if isinstance(value, list) else [value]


def _plain(value: Any) -> Any:
    """ovsdb's JSON (["set", [...]], ["map", [[k, v]...]], ["uuid", u]) as Python values."""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("set", "map", "uuid", "named-uuid"):
        kind, inner = value
        if kind == "set":
            return sorted((_plain(v) for v in inner), key=str)
        if kind == "map":
            return {_plain(k): _plain(v) for k, v in inner}
        return inner
    return value


def snapshot(central: RunningCentral) -> dict[str, list[str]]:
    """Every row of every NB table but NB_Global, as sorted JSON: equal snapshots mean an equal NB."""
    schema = json.loads(Path(ovs.SCHEMAS["nb"]).read_text())
    return {
        table: sorted(json.dumps(row, sort_keys=True) for row in rows(central, table))
        for table in schema["tables"]
        if table != "NB_Global"
    }
