"""Turns a topology request into a validated spec, and a spec into nodes and links; pure, no I/O.

The graph itself is built by shapes.py (TREE, LINEAR, SINGLE) and custom.py (CUSTOM), with the
addresses of addressing.py, within the limits of limits.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from merak.errors import InvalidArgument
from merak.ids import check_id
from merak.skips import Skips
from merak.v1 import topology_pb2
from services.topology import dataplanes
from services.topology.addressing import host_count, parse_cidr
from services.topology.custom import custom
from services.topology.limits import MAX_BRIDGE_PORTS, MAX_DOWNLINKS, MAX_IFNAME, MAX_VHOSTS
from services.topology.models import NodeKind, Topology, TopologySpec, VLinkSpec, VNicSpec, VNodeSpec
from services.topology.shapes import linear, single, tree

SUPPORTED_TYPES = (
    topology_pb2.SINGLE,
    topology_pb2.LINEAR,
    topology_pb2.TREE,
    topology_pb2.CUSTOM,
)
# The underlay of a generated lab whose request names none (Merak's first Postman collection): the
# addresses never leave the lab's namespaces. Merak's teste2e asks for the same.
DEFAULT_DATA_PLANE_CIDR = "10.200.0.0/16"

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

    dataplane = dataplanes.get(config.dataplane or dataplanes.DEFAULT.name).name
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
        cidr = parse_cidr(config.data_plane_cidr) if config.data_plane_cidr else None
        spec = replace(
            base,
            number_of_vhosts=sum(1 for v in vnodes if v.kind is NodeKind.VHOST),
            data_plane_cidr=str(cidr) if cidr else "",
            vnodes=vnodes,
            vlinks=tuple(VLinkSpec(v.name, v.src, v.dst) for v in config.vlinks),
        )
        # Resolving the links and addresses is the rest of the validation; generate() rebuilds the
        # graph, so that a spec stays small to store and pass around.
        custom(spec)
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
        cidr = parse_cidr(config.data_plane_cidr)
    else:
        cidr = ipaddress.IPv4Network(DEFAULT_DATA_PLANE_CIDR)
        if host_count(cidr) >= vhosts:
            skips.note("config.data_plane_cidr", f"not given; {cidr} is used")
    capacity = host_count(cidr)
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
        topology = tree(spec)
    elif spec.type == topology_pb2.LINEAR:
        topology = linear(spec)
    elif spec.type == topology_pb2.SINGLE:
        topology = single(spec)
    elif spec.type == topology_pb2.CUSTOM:
        return custom(spec)  # CUSTOM names are user input, checked there with field-specific errors.
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
