"""The generated topologies (TREE, LINEAR, SINGLE): vhosts on the data-plane CIDR, switches over them."""

from __future__ import annotations

import ipaddress

from services.topology.addressing import dotted
from services.topology.models import Link, Nic, Node, NodeKind, Topology, TopologySpec


def _vhosts(spec: TopologySpec) -> list[Node]:
    """vhost-<j> with NIC vh<j>-eth1 and the (j+1)-th host address of the data-plane CIDR."""
    net = ipaddress.IPv4Network(spec.data_plane_cidr)
    first = int(net.network_address) + 1
    suffix = f"/{net.prefixlen}"
    return [
        Node(f"vhost-{j}", NodeKind.VHOST, (Nic(f"vh{j}-eth1", dotted(first + j) + suffix),))
        for j in range(spec.number_of_vhosts)
    ]


def tree(spec: TopologySpec) -> Topology:
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


def linear(spec: TopologySpec) -> Topology:
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


def single(spec: TopologySpec) -> Topology:
    """One switch vs-1 with every vhost attached (Mininet's "single"): vs1-eth<j+1> to vhost-<j>, uid j+1."""
    vhosts = _vhosts(spec)
    nics = tuple(Nic(f"vs1-eth{j + 1}") for j in range(len(vhosts)))
    links = tuple(
        Link(j + 1, "vs-1", nic.name, vhost.name, vhost.nics[0].name)
        for j, (nic, vhost) in enumerate(zip(nics, vhosts, strict=True))
    )
    return Topology(spec, (*vhosts, Node("vs-1", NodeKind.VSWITCH, nics)), links)
