"""What one goal state asks of a host, read the way Alcor's Control Agent (ACA) reads it
(alcor-southbound.md §3.5, §5): VPC, subnet, security-group and gateway states are lookup tables only;
routers, ports, neighbours and DHCP entries are the work, each checked on its own so that a bad one gets
its INVALID_ARG status and the others go on. Pure: no I/O.

ACA's rules kept here: the VNI is the subnet's `tunnel_id` (the VPC's is never filled), 1..16777215
(1..4094 for VLAN); a port's device is `tap` + the first 11 characters of its id; a port CREATE needs
`fixed_ips[0]`, its subnet in the same message, an IPv4 address, a MAC and update_type FULL; UPDATE with
device_id and device_owner both empty is a DELETE, with either set it is INVALID_ARG; neighbours are one
entry per fixed IP, CREATE/UPDATE/INFO meaning "create or update"; the map keys of neighbours carry an
`L2/`/`L3/` prefix, the real id is in the configuration. ACA aborts on revision_number 0 and on
admin_state_up false: both are accepted here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from alcor.schema import common_pb2, dhcp_pb2, goalstate_pb2, neighbor_pb2, port_pb2, router_pb2, subnet_pb2
from merak.errors import enum_name

T = TypeVar("T")
TAP_PREFIX = "tap"
TAP_ID_CHARS = 11
MAX_VNI = (1 << 24) - 1
MAX_VLAN = 4094
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")

# Statuses and types as Alcor numbers them.
PORT, NEIGHBOR, DHCP, ROUTER = common_pb2.PORT, common_pb2.NEIGHBOR, common_pb2.DHCP, common_pb2.ROUTER
CREATE, UPDATE, DELETE, INFO = common_pb2.CREATE, common_pb2.UPDATE, common_pb2.DELETE, common_pb2.INFO
SUCCESS, FAILURE, INVALID_ARG, PENDING = (
    common_pb2.SUCCESS,
    common_pb2.FAILURE,
    common_pb2.INVALID_ARG,
    common_pb2.PENDING,
)


class Invalid(ValueError):
    """A resource ACA would answer INVALID_ARG for; the message says why."""


def tap_name(port_id: str) -> str:
    """The device of a port, as Nova and Merak name it and ACA expects it: tap + 11 characters."""
    return TAP_PREFIX + port_id[:TAP_ID_CHARS]


@dataclass(frozen=True, slots=True)
class PortWork:
    """A port to plug into its VNI on this host (CREATE) or to take out of it (DELETE)."""

    id: str
    operation: int  # as received (echoed in the status)
    delete: bool
    tap: str
    vni: int = 0
    ip: str = ""
    prefix_len: int = 0
    mac: str = ""
    vpc_id: str = ""
    gateway_ip: str = ""


@dataclass(frozen=True, slots=True)
class NeighborWork:
    """One fixed IP of a port on another host (or this one: nothing to do): its overlay entry."""

    id: str  # the neighbour's port id
    operation: int
    delete: bool
    vni: int
    ip: str
    mac: str
    host_ip: str
    l3: bool
    vpc_id: str = ""  # of its subnet


@dataclass(frozen=True, slots=True)
class RouterWork:
    """This host's distributed router: the gateways of its subnets, by VNI."""

    id: str
    operation: int
    delete: bool
    gateways: tuple[tuple[int, str, str], ...]  # (vni, gateway IP, gateway MAC)


@dataclass(frozen=True, slots=True)
class DhcpWork:
    """A DHCP entry keyed by MAC (the host's DHCP answers from it)."""

    id: str
    operation: int
    delete: bool
    mac: str
    ip: str
    subnet_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A resource refused before any work: its status is INVALID_ARG with `reason`."""

    type: int
    id: str
    operation: int
    reason: str


@dataclass
class Plan:
    """The work of one goal state, in ACA's order: routers, ports, neighbours, DHCP."""

    routers: list[RouterWork] = field(default_factory=list)
    ports: list[PortWork] = field(default_factory=list)
    neighbors: list[NeighborWork] = field(default_factory=list)
    dhcp: list[DhcpWork] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Subnet:
    vni: int
    prefix_len: int
    gateway_ip: str
    gateway_mac: str
    vpc_id: str = ""


SubnetOf = Callable[[str], _Subnet]


def from_v2(message: goalstate_pb2.GoalStateV2) -> Plan:
    """The plan of a GoalStateV2 (PushGoalStatesStream): its maps keyed by resource id."""
    return _plan(
        subnets=message.subnet_states,
        routers=message.router_states.items(),
        ports=message.port_states.items(),
        neighbors=message.neighbor_states.items(),
        dhcp=message.dhcp_states.items(),
    )


def from_v1(message: goalstate_pb2.GoalState) -> Plan:
    """The plan of a GoalState (PushNetworkResourceStates): lists; a subnet is found only when its
    state's operation is INFO, as ACA's V1 path does."""
    subnets = {s.configuration.id: s for s in message.subnet_states if s.operation_type == common_pb2.INFO}
    return _plan(
        subnets=subnets,
        routers=((r.configuration.id, r) for r in message.router_states),
        ports=((p.configuration.id, p) for p in message.port_states),
        neighbors=((n.configuration.id, n) for n in message.neighbor_states),
        dhcp=((d.configuration.id, d) for d in message.dhcp_states),
    )


def _plan(
    *,
    subnets: Mapping[str, subnet_pb2.SubnetState],
    routers: Iterable[tuple[str, router_pb2.RouterState]],
    ports: Iterable[tuple[str, port_pb2.PortState]],
    neighbors: Iterable[tuple[str, neighbor_pb2.NeighborState]],
    dhcp: Iterable[tuple[str, dhcp_pb2.DHCPState]],
) -> Plan:
    plan = Plan()
    known: dict[str, _Subnet | Invalid] = {}

    def subnet(subnet_id: str) -> _Subnet:
        if subnet_id not in known:
            state = subnets.get(subnet_id)
            try:
                if state is None:
                    raise Invalid(f"subnet {subnet_id[:80]!r} is not in the goal state")
                known[subnet_id] = _subnet(state.configuration)
            except Invalid as exc:
                known[subnet_id] = exc
        found = known[subnet_id]
        if isinstance(found, Invalid):
            raise found
        return found

    for key, router in routers:
        _take(plan, ROUTER, key, router, read=partial(_router, router, subnet), add=plan.routers.append)
    for key, port in ports:
        _take(plan, PORT, key, port, read=partial(_port, port, subnet), add=plan.ports.append)
    for key, neighbor in neighbors:
        _take(
            plan,
            NEIGHBOR,
            key,
            neighbor,
            read=partial(_neighbors, neighbor, subnet),
            add=plan.neighbors.extend,
        )
    for key, entry in dhcp:
        _take(plan, DHCP, key, entry, read=partial(_dhcp, entry), add=plan.dhcp.append)
    return plan


def _take(
    plan: Plan, kind: int, key: str, state: Any, *, read: Callable[[], T], add: Callable[[T], None]
) -> None:
    """Read one resource into the plan, or refuse it (INVALID_ARG with the reason)."""
    try:
        add(read())
    except Invalid as exc:
        configuration = getattr(state, "configuration", None)
        resource_id = getattr(configuration, "id", "") or key.partition("/")[2] or key
        plan.refused.append(Refused(kind, resource_id, int(getattr(state, "operation_type", 0)), str(exc)))


def _subnet(config: subnet_pb2.SubnetConfiguration) -> _Subnet:
    if "/" not in config.cidr:
        raise Invalid(f"subnet {config.id[:80]!r}: cidr {config.cidr[:60]!r} has no prefix length")
    try:
        network = ipaddress.IPv4Network(config.cidr, strict=False)
    except ValueError:
        raise Invalid(
            f"subnet {config.id[:80]!r}: cidr {config.cidr[:60]!r} is not an IPv4 network"
        ) from None
    most = MAX_VLAN if config.network_type == common_pb2.VLAN else MAX_VNI
    if not 1 <= config.tunnel_id <= most:
        raise Invalid(f"subnet {config.id[:80]!r}: tunnel_id {config.tunnel_id} is not in 1..{most}")
    return _Subnet(
        vni=config.tunnel_id,
        prefix_len=network.prefixlen,
        gateway_ip=config.gateway.ip_address,
        gateway_mac=config.gateway.mac_address,
        vpc_id=config.vpc_id,
    )


def _ipv4(what: str, text: str) -> str:
    # inet_pton takes exactly the canonical dotted quad (no leading zeros, no short forms), in C: a goal
    # state may carry a million neighbours.
    try:
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        raise Invalid(f"{what}: {text[:60]!r} is not an IPv4 address") from None
    return text


def _mac(what: str, text: str) -> str:
    if not _MAC.match(text):
        raise Invalid(f"{what}: {text[:60]!r} is not a MAC address")
    return text.replace("-", ":").lower()


def _port(state: port_pb2.PortState, subnet: SubnetOf) -> PortWork:
    config = state.configuration
    if not config.id:
        raise Invalid("port: no id")
    operation = state.operation_type
    delete = operation == DELETE
    if operation == UPDATE:
        if config.device_id or config.device_owner:
            raise Invalid(
                f"port {config.id[:80]}: UPDATE with a device_id or device_owner (ACA takes CREATE)"
            )
        delete = True  # ACA: an UPDATE with neither is a delete
    elif operation not in (CREATE, DELETE):
        raise Invalid(
            f"port {config.id[:80]}: operation {enum_name(common_pb2.OperationType, operation)} on a port"
        )
    if not config.vpc_id:
        raise Invalid(f"port {config.id[:80]}: no vpc_id")
    tap = tap_name(config.id)
    if delete:
        return PortWork(id=config.id, operation=operation, delete=True, tap=tap, vpc_id=config.vpc_id)
    if config.update_type != common_pb2.FULL:
        raise Invalid(f"port {config.id[:80]}: a CREATE must be update_type FULL")
    if not config.fixed_ips:
        raise Invalid(f"port {config.id[:80]}: no fixed_ips")
    fixed = config.fixed_ips[0]
    found = subnet(fixed.subnet_id)
    return PortWork(
        id=config.id,
        operation=operation,
        delete=False,
        tap=tap,
        vni=found.vni,
        ip=_ipv4(f"port {config.id[:80]}: fixed_ips[0]", fixed.ip_address),
        prefix_len=found.prefix_len,
        mac=_mac(f"port {config.id[:80]}: mac_address", config.mac_address),
        vpc_id=config.vpc_id,
        gateway_ip=found.gateway_ip,
    )


def _neighbors(state: neighbor_pb2.NeighborState, subnet: SubnetOf) -> list[NeighborWork]:
    config = state.configuration
    if not config.id:
        raise Invalid("neighbor: no id")
    what = f"neighbor {config.id[:80]}"
    mac = _mac(f"{what}: mac_address", config.mac_address)
    host_ip = _ipv4(f"{what}: host_ip_address", config.host_ip_address)
    if not config.fixed_ips:
        raise Invalid(f"{what}: no fixed_ips")
    work = []
    for fixed in config.fixed_ips:
        found = subnet(fixed.subnet_id)
        work.append(
            NeighborWork(
                id=config.id,
                operation=state.operation_type,
                delete=state.operation_type == DELETE,
                vni=found.vni,
                ip=_ipv4(f"{what}: fixed_ips", fixed.ip_address),
                mac=mac,
                host_ip=host_ip,
                l3=fixed.neighbor_type == neighbor_pb2.L3,
                vpc_id=found.vpc_id,
            )
        )
    return work


def _router(state: router_pb2.RouterState, subnet: SubnetOf) -> RouterWork:
    config = state.configuration
    operation = int(state.operation_type)
    if not config.id:
        raise Invalid("router: no id")
    gateways = []
    for table in config.subnet_routing_tables:
        found = subnet(table.subnet_id)
        if found.gateway_ip:
            ip = _ipv4(f"router {config.id[:80]}: gateway of {table.subnet_id[:80]}", found.gateway_ip)
            mac = _mac(f"router {config.id[:80]}: gateway MAC of {table.subnet_id[:80]}", found.gateway_mac)
            gateways.append((found.vni, ip, mac))
    return RouterWork(id=config.id, operation=operation, delete=operation == DELETE, gateways=tuple(gateways))


def _dhcp(state: dhcp_pb2.DHCPState) -> DhcpWork:
    config = state.configuration
    operation = int(state.operation_type)
    if not config.id:
        raise Invalid("dhcp: no id")
    return DhcpWork(
        id=config.id,
        operation=operation,
        delete=operation == DELETE,
        mac=_mac(f"dhcp {config.id[:80]}: mac_address", config.mac_address),
        ip=_ipv4(f"dhcp {config.id[:80]}: ipv4_address", config.ipv4_address) if config.ipv4_address else "",
        subnet_id=config.subnet_id,
    )
