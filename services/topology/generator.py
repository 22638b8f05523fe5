"""Turns a topology request into a validated spec, and a spec into nodes and links; pure, no I/O."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from merak.errors import InvalidArgument
from merak.ids import check_id
from merak.skips import Skips
from merak.v1 import topology_pb2
from services.topology.models import (
    Link,
    Nic,
    Node,
    NodeKind,
    Topology,
    TopologySpec,
    VLinkSpec,
    VNicSpec,
    VNodeSpec,
)

MAX_VHOSTS = 1_000_000
# A Linux bridge holds at most 1,023 ports (port numbers are 10 bits, 0 is reserved).
MAX_BRIDGE_PORTS = 1023
# Every generated switch keeps one port for its uplink.
MAX_DOWNLINKS = MAX_BRIDGE_PORTS - 1
# IFNAMSIZ is 16 including the terminating NUL.
MAX_IFNAME = 15
MAX_NODE_NAME = 32

SUPPORTED_TYPES = (
    topology_pb2.SINGLE,
    topology_pb2.LINEAR,
    topology_pb2.TREE,
    topology_pb2.CUSTOM,
)
DATAPLANES = ("real", "fake")
# The underlay of a generated lab whose request names none (Merak's first Postman collection): the
# addresses never leave the lab's namespaces. Merak's teste2e asks for the same.
DEFAULT_DATA_PLANE_CIDR = "10.200.0.0/16"

# Lowercase and digits only: names become kernel interface and namespace names on every backend.
# A leading letter: namespaces `mk-<short>-<digit>…` belong to the VMs of vhost <digit…>.
_NAME = re.compile(r"[a-z][a-z0-9-]*")

_VNODE_KINDS = {
    topology_pb2.VHOST: NodeKind.VHOST,
    topology_pb2.VSWITCH: NodeKind.VSWITCH,
    topology_pb2.VGATEWAY: NodeKind.GATEWAY,
    topology_pb2.VROUTER: NodeKind.ROUTER,
}


def spec_from_proto(
    config: topology_pb2.InternalTopologyConfiguration, skips: Skips | None = None
) -> TopologySpec:
    """Validate a topology request; InvalidArgument names the first offending field.

    What Merak ignored (control-plane gateways, vnodes and vlinks with a generated type) is left out with a
    warning in `skips`; a generated lab without a data-plane CIDR or a TREE without ports_per_vswitch gets
    a default, said there too.
    """
    skips = Skips() if skips is None else skips
    topology_id = check_id("config.topology_id", config.topology_id)

    kind = int(config.topology_type)
    if kind not in SUPPORTED_TYPES:
        raise InvalidArgument(
            "config.topology_type", f"{_type_name(kind)} is not supported; supported: {_supported()}"
        )

    dataplane = config.dataplane or "real"
    if dataplane not in DATAPLANES:
        raise InvalidArgument("config.dataplane", f"must be 'real' or 'fake', got {dataplane!r}")
    if config.images and (config.backend or "local") == "local":
        skips.skip(
            "config.images",
            f"{len(config.images)} image(s): the local backend runs no containers (kubernetes does)",
            "ignored",
        )

    base = TopologySpec(
        topology_id=topology_id,
        name=config.name,
        type=kind,
        number_of_vhosts=0,
        number_of_racks=config.number_of_racks,
        vhost_per_rack=config.vhost_per_rack,
        ports_per_vswitch=config.ports_per_vswitch,
        backend=config.backend or "local",
        dataplane=dataplane,
    )

    if kind == topology_pb2.CUSTOM:
        vnodes = tuple(_vnode_from_proto(i, v) for i, v in enumerate(config.vnodes))
        cidr = _parse_cidr(config.data_plane_cidr) if config.data_plane_cidr else None
        spec = replace(
            base,
            number_of_vhosts=sum(1 for v in vnodes if v.kind is NodeKind.VHOST),
            data_plane_cidr=str(cidr) if cidr else "",
            vnodes=vnodes,
            vlinks=tuple(VLinkSpec(v.name, v.src, v.dst) for v in config.vlinks),
        )
        # Resolving the links and addresses is the rest of the validation; generate() rebuilds the
        # graph, so that a spec stays small to store and pass around.
        _custom(spec)
        return spec

    _not_emulated(config, skips)
    limit = MAX_DOWNLINKS if kind == topology_pb2.SINGLE else MAX_VHOSTS
    vhosts = config.number_of_vhosts
    if not 1 <= vhosts <= limit:
        suffix = " for a SINGLE topology (one switch)" if kind == topology_pb2.SINGLE else ""
        raise InvalidArgument(
            "config.number_of_vhosts", f"must be between 1 and {limit}{suffix}, got {vhosts}"
        )
    if config.data_plane_cidr:
        cidr = _parse_cidr(config.data_plane_cidr)
    else:
        cidr = ipaddress.IPv4Network(DEFAULT_DATA_PLANE_CIDR)
        if _host_count(cidr) >= vhosts:
            skips.note("config.data_plane_cidr", f"not given; {cidr} is used")
    capacity = _host_count(cidr)
    if capacity < vhosts:
        raise InvalidArgument(
            "config.data_plane_cidr",
            f"{cidr} holds {capacity} vhost addresses, but {vhosts} vhosts were asked for",
        )
    if kind == topology_pb2.TREE:
        base = replace(base, ports_per_vswitch=_check_tree_shape(config, skips))
    return replace(base, number_of_vhosts=vhosts, data_plane_cidr=str(cidr))


def _not_emulated(config: topology_pb2.InternalTopologyConfiguration, skips: Skips) -> None:
    """What a generated topology takes no notice of, as Merak's did not: its clients send placeholders."""
    name = topology_pb2.TopologyType.Name(config.topology_type)
    if config.vnodes or config.vlinks:
        skips.skip(
            "config.vnodes",
            f"{len(config.vnodes)} vnode(s) and {len(config.vlinks)} vlink(s) with a {name} topology: "
            "only a CUSTOM topology is made of vnodes and vlinks",
            "ignored",
        )
    if config.number_of_gateways or config.gateway_ips:
        skips.skip(
            "config.gateway_ips",
            f"{max(config.number_of_gateways, len(config.gateway_ips))} control-plane gateway(s): "
            "not emulated (Merak's topology did not build them either)",
            "ignored",
        )


def generate(spec: TopologySpec) -> Topology:
    """Build the nodes and links of a spec returned by spec_from_proto; the same spec gives the same graph."""
    if spec.type == topology_pb2.TREE:
        topology = _tree(spec)
    elif spec.type == topology_pb2.LINEAR:
        topology = _linear(spec)
    elif spec.type == topology_pb2.SINGLE:
        topology = _single(spec)
    elif spec.type == topology_pb2.CUSTOM:
        return _custom(spec)  # CUSTOM names are user input, checked there with field-specific errors.
    else:
        raise InvalidArgument(
            "config.topology_type", f"{_type_name(spec.type)} is not supported; supported: {_supported()}"
        )
    # Generated names are ours; the limits in spec_from_proto are what keep them within IFNAMSIZ.
    assert all(len(nic.name) <= MAX_IFNAME for node in topology.nodes for nic in node.nics), (
        "interface name too long"
    )
    return topology


# --- validation helpers ----------------------------------------------------------------------------------


def _type_name(kind: int) -> str:
    try:
        return topology_pb2.TopologyType.Name(kind)  # type: ignore[arg-type]  # an int off the wire may be unknown
    except ValueError:
        return f"unknown topology type {kind}"


def _supported() -> str:
    return ", ".join(topology_pb2.TopologyType.Name(t) for t in SUPPORTED_TYPES)


def _parse_cidr(text: str) -> ipaddress.IPv4Network:
    if "/" not in text:
        raise InvalidArgument(
            "config.data_plane_cidr", f"must be an IPv4 network in CIDR form like 10.200.0.0/16: {text!r}"
        )
    try:
        # strict=False: "10.200.3.4/16" means 10.200.0.0/16, as most tools read it.
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise InvalidArgument(
            "config.data_plane_cidr", f"must be an IPv4 network in CIDR form like 10.200.0.0/16: {text!r}"
        ) from None


def _host_count(net: ipaddress.IPv4Network) -> int:
    # The network and broadcast addresses are not given to hosts; /31 and /32 therefore hold none.
    return max(net.num_addresses - 2, 0)


def _check_tree_shape(config: topology_pb2.InternalTopologyConfiguration, skips: Skips) -> int:
    """Checks a TREE's shape; returns its ports per vswitch (when not given: one switch over the racks)."""
    per_rack = config.vhost_per_rack
    bridge = f"a bridge holds {MAX_BRIDGE_PORTS} ports, one is the uplink"
    if not 1 <= per_rack <= MAX_DOWNLINKS:
        raise InvalidArgument(
            "config.vhost_per_rack", f"must be between 1 and {MAX_DOWNLINKS} ({bridge}), got {per_rack}"
        )
    ports = config.ports_per_vswitch
    if ports == 0:
        racks = -(-config.number_of_vhosts // per_rack)
        ports = min(max(racks, 2), MAX_DOWNLINKS)
        shape = (
            f"one vswitch over the {racks} racks"
            if racks <= ports
            else f"vswitches of {ports} over the racks"
        )
        skips.note("config.ports_per_vswitch", f"not given; {ports} is used ({shape})")
    # Fewer than 2 ports would never shrink a layer, so the tree would never reach its core.
    if not 2 <= ports <= MAX_DOWNLINKS:
        raise InvalidArgument(
            "config.ports_per_vswitch", f"must be between 2 and {MAX_DOWNLINKS} ({bridge}), got {ports}"
        )
    racks = config.number_of_racks
    vhosts = config.number_of_vhosts
    # 0 means as many racks as needed; otherwise it is a bound, and Merak's silent dropping of the vhosts
    # that do not fit is an error here.
    if racks and racks * per_rack < vhosts:
        raise InvalidArgument(
            "config.number_of_racks",
            f"{racks} racks of {per_rack} vhosts hold {racks * per_rack}, but {vhosts} vhosts were asked "
            "for; raise it, or set 0 for as many racks as needed",
        )
    return ports


def _vnode_from_proto(index: int, vnode: topology_pb2.InternalVNodeInfo) -> VNodeSpec:
    kind = _VNODE_KINDS.get(vnode.type)
    if kind is None:
        known = ", ".join(topology_pb2.VNodeType.Name(t) for t in _VNODE_KINDS)
        raise InvalidArgument(
            f"config.vnodes[{index}].type", f"unknown node type {int(vnode.type)}; known: {known}"
        )
    return VNodeSpec(vnode.name, kind, tuple(VNicSpec(nic.name, nic.ip) for nic in vnode.vnics))


# --- generated topologies --------------------------------------------------------------------------------


def _dotted(address: int) -> str:
    # Formatting the int directly is several times faster than str(IPv4Address(...)) at 10^5-10^6 hosts.
    return f"{address >> 24}.{(address >> 16) & 255}.{(address >> 8) & 255}.{address & 255}"


def _vhosts(spec: TopologySpec) -> list[Node]:
    """vhost-<j> with NIC vh<j>-eth1 and the (j+1)-th host address of the data-plane CIDR."""
    net = ipaddress.IPv4Network(spec.data_plane_cidr)
    first = int(net.network_address) + 1
    suffix = f"/{net.prefixlen}"
    return [
        Node(f"vhost-{j}", NodeKind.VHOST, (Nic(f"vh{j}-eth1", _dotted(first + j) + suffix),))
        for j in range(spec.number_of_vhosts)
    ]


def _tree(spec: TopologySpec) -> Topology:
    """Racks of vhosts, layers of vswitches grouping ports_per_vswitch nodes each, one core on top."""
    vhosts = _vhosts(spec)
    per_rack = spec.vhost_per_rack
    ports = spec.ports_per_vswitch
    links: list[Link] = []
    uid = 0

    racks: list[Node] = []
    layer: list[tuple[str, str]] = []  # (node, uplink NIC) of the current top layer
    for i, start in enumerate(range(0, len(vhosts), per_rack), start=1):
        members = vhosts[start : start + per_rack]
        name = f"rack-{i}"
        nics = tuple(Nic(f"r{i}-eth{p}") for p in range(1, len(members) + 2))
        for nic, vhost in zip(nics, members, strict=False):
            uid += 1
            links.append(Link(uid, name, nic.name, vhost.name, vhost.nics[0].name))
        racks.append(Node(name, NodeKind.RACK, nics))
        layer.append((name, nics[-1].name))

    vswitches: list[Node] = []
    k = 0
    # At least one vswitch layer, as in Merak, then more while the top layer would not fit the next switch.
    while True:
        upper: list[tuple[str, str]] = []
        for start in range(0, len(layer), ports):
            group = layer[start : start + ports]
            k += 1
            name = f"vs-{k}"
            nics = tuple(Nic(f"vs{k}-eth{p}") for p in range(1, len(group) + 2))
            for nic, (child, child_nic) in zip(nics, group, strict=False):
                uid += 1
                links.append(Link(uid, name, nic.name, child, child_nic))
            vswitches.append(Node(name, NodeKind.VSWITCH, nics))
            upper.append((name, nics[-1].name))
        layer = upper
        if len(layer) <= ports:
            break

    core_nics = tuple(Nic(f"c1-eth{p}") for p in range(1, len(layer) + 1))
    for nic, (child, child_nic) in zip(core_nics, layer, strict=True):
        uid += 1
        links.append(Link(uid, "core-1", nic.name, child, child_nic))
    core = Node("core-1", NodeKind.CORE, core_nics)

    return Topology(spec, (*vhosts, *racks, *vswitches, core), tuple(links))


def _linear(spec: TopologySpec) -> Topology:
    """A chain of switches vs-1..vs-n, vhost-<j> hanging off vs-<j+1>.

    Port roles are fixed so a name tells its peer: vs<k>-eth1 to the vhost, vs<k>-eth2 to vs-<k-1>
    (absent on vs-1), vs<k>-eth3 to vs-<k+1> (absent on the last). Host links get uids 1..n, then the
    chain links n+1..2n-1 from vs-1 onwards, a side on the lower-numbered switch.
    """
    vhosts = _vhosts(spec)
    n = len(vhosts)
    switches: list[Node] = []
    links: list[Link] = []
    for j, vhost in enumerate(vhosts):
        k = j + 1
        nics = [Nic(f"vs{k}-eth1")]
        if k > 1:
            nics.append(Nic(f"vs{k}-eth2"))
        if k < n:
            nics.append(Nic(f"vs{k}-eth3"))
        switches.append(Node(f"vs-{k}", NodeKind.VSWITCH, tuple(nics)))
        links.append(Link(k, f"vs-{k}", f"vs{k}-eth1", vhost.name, vhost.nics[0].name))
    for k in range(1, n):
        links.append(Link(n + k, f"vs-{k}", f"vs{k}-eth3", f"vs-{k + 1}", f"vs{k + 1}-eth2"))
    return Topology(spec, (*vhosts, *switches), tuple(links))


def _single(spec: TopologySpec) -> Topology:
    """One switch vs-1 with every vhost attached (Mininet's "single"): vs1-eth<j+1> to vhost-<j>, uid j+1."""
    vhosts = _vhosts(spec)
    nics = tuple(Nic(f"vs1-eth{j + 1}") for j in range(len(vhosts)))
    links = tuple(
        Link(j + 1, "vs-1", nic.name, vhost.name, vhost.nics[0].name)
        for j, (nic, vhost) in enumerate(zip(nics, vhosts, strict=True))
    )
    return Topology(spec, (*vhosts, Node("vs-1", NodeKind.VSWITCH, nics)), links)


# --- CUSTOM ----------------------------------------------------------------------------------------------


@dataclass
class _DraftNode:
    """A CUSTOM node while its links and addresses are being resolved."""

    index: int
    name: str
    kind: NodeKind
    nics: list[str] = field(default_factory=list)


def _custom(spec: TopologySpec) -> Topology:
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
                address = _parse_interface(f"{nic_where}.ip", vnic.ip)
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


def _parse_interface(where: str, text: str) -> ipaddress.IPv4Interface:
    if "/" not in text:
        raise InvalidArgument(where, f"must be an IPv4 address with prefix length like 10.0.0.1/24: {text!r}")
    try:
        address = ipaddress.IPv4Interface(text)
    except ValueError:
        raise InvalidArgument(
            where, f"must be an IPv4 address with prefix length like 10.0.0.1/24: {text!r}"
        ) from None
    net = address.network
    if net.prefixlen <= 30 and address.ip in (net.network_address, net.broadcast_address):
        raise InvalidArgument(where, f"{address.ip} is the network or broadcast address of {net}")
    return address


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
    first = int(net.network_address) + 1
    last = first + _host_count(net) - 1
    free = _host_count(net) - sum(1 for a in used if first <= a <= last)
    if free < len(wanting):
        raise InvalidArgument(
            "config.data_plane_cidr",
            f"{net} holds {free} free vhost addresses, but {len(wanting)} vhost NICs need one",
        )
    suffix = f"/{net.prefixlen}"
    candidate = first
    for nic in wanting:
        while candidate in used:
            candidate += 1
        ips[nic] = _dotted(candidate) + suffix
        candidate += 1
    return ips
