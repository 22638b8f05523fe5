"""CUSTOM topologies: the declared vnodes and vlinks checked, endpoints resolved to NICs, vhosts addressed."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from merak.errors import InvalidArgument
from services.topology.addressing import free_addresses, parse_interface
from services.topology.limits import MAX_BRIDGE_PORTS, MAX_IFNAME, MAX_NODE_NAME, MAX_VHOSTS
from services.topology.models import Link, Nic, Node, NodeKind, Topology, TopologySpec, VLinkSpec

# Lowercase and digits only: names become kernel interface and namespace names on every backend.
# A leading letter: namespaces `mk-<short>-<digit>…` belong to the VMs of vhost <digit…>.
_NAME = re.compile(r"[a-z][a-z0-9-]*")


@dataclass
class _DraftNode:
    """A CUSTOM node while its links and addresses are being resolved."""

    index: int
    name: str
    kind: NodeKind
    nics: list[str] = field(default_factory=list)


def custom(spec: TopologySpec) -> Topology:
    """Nodes and links as declared; node-name endpoints take the node's next free NIC or a new one."""
    if not spec.vnodes:
        raise InvalidArgument("config.vnodes", "a CUSTOM topology needs at least one vnode")

    nodes: dict[str, _DraftNode] = {}
    owner: dict[str, str] = {}  # NIC name -> node name
    declared_ip: dict[str, ipaddress.IPv4Interface] = {}  # NIC name -> address
    ip_user: dict[int, str] = {}  # address -> field that declared it
    for i, vnode in enumerate(spec.vnodes):
        where = f"config.vnodes[{i}]"
        _check_name(f"{where}.name", vnode.name, MAX_NODE_NAME)
        if vnode.name in nodes:
            raise InvalidArgument(f"{where}.name", f"duplicate node name {vnode.name!r}")
        if vnode.name in owner:
            raise InvalidArgument(
                f"{where}.name", f"{vnode.name!r} is already a NIC name; endpoints would be ambiguous"
            )
        draft = _DraftNode(i, vnode.name, vnode.kind)
        nodes[vnode.name] = draft
        for n, vnic in enumerate(vnode.nics):
            nic_where = f"{where}.vnics[{n}]"
            _check_name(f"{nic_where}.name", vnic.name, MAX_IFNAME)
            if vnic.name == "lo":
                raise InvalidArgument(
                    f"{nic_where}.name", "'lo' is the loopback interface of every namespace"
                )
            if vnic.name in owner:
                raise InvalidArgument(
                    f"{nic_where}.name",
                    f"duplicate NIC name {vnic.name!r} (also on node {owner[vnic.name]!r})",
                )
            if vnic.name in nodes:
                raise InvalidArgument(
                    f"{nic_where}.name", f"{vnic.name!r} is already a node name; endpoints would be ambiguous"
                )
            owner[vnic.name] = vnode.name
            draft.nics.append(vnic.name)
            if vnic.ip:
                address = parse_interface(f"{nic_where}.ip", vnic.ip)
                if int(address.ip) in ip_user:
                    raise InvalidArgument(
                        f"{nic_where}.ip", f"{address.ip} is already used by {ip_user[int(address.ip)]}"
                    )
                ip_user[int(address.ip)] = f"{nic_where}.ip"
                declared_ip[vnic.name] = address
    vhost_count = sum(1 for d in nodes.values() if d.kind is NodeKind.VHOST)
    if vhost_count > MAX_VHOSTS:
        raise InvalidArgument("config.vnodes", f"at most {MAX_VHOSTS} vhosts, got {vhost_count}")

    endpoints = _resolve_links(spec.vlinks, nodes, owner)

    for draft in nodes.values():
        where = f"config.vnodes[{draft.index}].vnics"
        if draft.kind is NodeKind.VHOST and not draft.nics:
            raise InvalidArgument(where, f"vhost {draft.name!r} has no NIC; declare one or link it")
        if draft.kind is not NodeKind.VHOST and len(draft.nics) > MAX_BRIDGE_PORTS:
            raise InvalidArgument(
                where,
                f"{draft.name!r} has {len(draft.nics)} NICs, but a bridge holds at most {MAX_BRIDGE_PORTS}",
            )

    ips = _assign_vhost_ips(spec, nodes, declared_ip, set(ip_user))
    built = tuple(
        Node(d.name, d.kind, tuple(Nic(nic, ips.get(nic, "")) for nic in d.nics)) for d in nodes.values()
    )
    links = tuple(
        Link(uid, owner[src], src, owner[dst], dst) for uid, (src, dst) in enumerate(endpoints, start=1)
    )
    return Topology(spec, built, links)


def _check_name(where: str, name: str, limit: int) -> None:
    if not name:
        raise InvalidArgument(where, "required")
    if len(name) > limit:
        raise InvalidArgument(where, f"at most {limit} characters, got {len(name)}: {name!r}")
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            where,
            f"only lowercase letters, digits and '-' allowed, starting with a letter: {name!r}",
        )


def _resolve_links(
    vlinks: Sequence[VLinkSpec], nodes: dict[str, _DraftNode], owner: dict[str, str]
) -> list[tuple[str, str]]:
    """The (src NIC, dst NIC) of every vlink; may add auto-named NICs to `nodes` and `owner`."""
    # Pass 1: NICs named explicitly are claimed first, so a node-name endpoint earlier in the list
    # cannot take a NIC that a later vlink names.
    claimed: dict[str, int] = {}  # NIC -> index of the vlink using it
    for i, vlink in enumerate(vlinks):
        if vlink.src and vlink.src == vlink.dst:
            raise InvalidArgument(f"config.vlinks[{i}].dst", f"links {vlink.src!r} to itself")
        ends: list[str] = []
        for side, endpoint in (("src", vlink.src), ("dst", vlink.dst)):
            where = f"config.vlinks[{i}].{side}"
            if not endpoint:
                raise InvalidArgument(where, "required")
            if endpoint in owner:
                if endpoint in claimed:
                    raise InvalidArgument(
                        where, f"NIC {endpoint!r} is already used by config.vlinks[{claimed[endpoint]}]"
                    )
                claimed[endpoint] = i
                ends.append(owner[endpoint])
            elif endpoint in nodes:
                ends.append(endpoint)
            else:
                raise InvalidArgument(where, f"{endpoint!r} is neither a declared NIC nor a node")
        if ends[0] == ends[1]:
            raise InvalidArgument(f"config.vlinks[{i}].dst", f"links node {ends[0]!r} to itself")

    # Pass 2: node-name endpoints take the node's next declared NIC no vlink uses, else a new NIC.
    taken = set(claimed)
    resolved: list[tuple[str, str]] = []
    for i, vlink in enumerate(vlinks):
        pair: list[str] = []
        for side, endpoint in (("src", vlink.src), ("dst", vlink.dst)):
            if endpoint in owner and claimed.get(endpoint) == i:
                pair.append(endpoint)
                continue
            nic = _free_nic(f"config.vlinks[{i}].{side}", nodes[endpoint], nodes, owner, taken)
            taken.add(nic)
            pair.append(nic)
        resolved.append((pair[0], pair[1]))
    return resolved


def _free_nic(
    where: str, draft: _DraftNode, nodes: dict[str, _DraftNode], owner: dict[str, str], taken: set[str]
) -> str:
    for nic in draft.nics:
        if nic not in taken:
            return nic
    k = len(draft.nics) + 1
    while (name := f"{draft.name}-eth{k}") in owner or name in nodes:
        k += 1
    if len(name) > MAX_IFNAME:
        raise InvalidArgument(
            where,
            f"node {draft.name!r} has no free NIC and the automatic name {name!r} is longer than "
            f"{MAX_IFNAME} characters; declare the NIC in config.vnodes[{draft.index}].vnics",
        )
    owner[name] = draft.name
    draft.nics.append(name)
    return name


def _assign_vhost_ips(
    spec: TopologySpec,
    nodes: dict[str, _DraftNode],
    declared: dict[str, ipaddress.IPv4Interface],
    used: set[int],
) -> dict[str, str]:
    """NIC name -> CIDR-form IP: declared ones as given, vhost NICs without one from data_plane_cidr."""
    ips = {nic: str(address) for nic, address in declared.items()}
    wanting = [nic for d in nodes.values() if d.kind is NodeKind.VHOST for nic in d.nics if nic not in ips]
    if not wanting:
        return ips
    if not spec.data_plane_cidr:
        raise InvalidArgument("config.data_plane_cidr", f"required: {len(wanting)} vhost NICs have no ip")
    net = ipaddress.IPv4Network(spec.data_plane_cidr)
    ips.update(zip(wanting, free_addresses(net, used, len(wanting)), strict=True))
    return ips
