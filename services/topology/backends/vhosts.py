"""What an agent is told about the vhosts it serves (a merak.vhostsfile document), on every backend."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from merak.vhostsfile import Vhost, VhostsFile
from services.topology.models import Node, Topology, vhost_mac
from services.topology.names import vm_ns_prefix

# Where a host agent serves Alcor's goal states: ACA's port (Alcor's NCM reaches every host there).
ACA_PORT = 50001


def vhosts_file(
    topology: Topology,
    vhosts: Iterable[tuple[int, Node]],
    goalstate_address: Callable[[int], str] = lambda _index: "",
) -> VhostsFile:
    """The document of an agent serving `vhosts` (each with its position among the topology's vhosts);
    `goalstate_address` says where the index-th vhost serves Alcor's host-agent API ("": nowhere)."""
    spec = topology.spec
    return VhostsFile(
        topology_id=spec.topology_id,
        short_id=spec.short_id,
        dataplane=spec.dataplane,
        vhosts=tuple(_vhost(topology, index, node, goalstate_address(index)) for index, node in vhosts),
    )


def _vhost(topology: Topology, index: int, node: Node, goalstate_address: str) -> Vhost:
    """The index-th vhost: the address of its first NIC is its data-plane address."""
    spec = topology.spec
    nic = node.nics[0] if node.nics else None
    ip, _, prefix = (nic.ip if nic else "").partition("/")
    return Vhost(
        name=node.name,
        index=index,
        netns=spec.plane.vhost_netns(spec.short_id, node.name),
        vm_ns_prefix=vm_ns_prefix(spec.short_id, index),
        datapath_ip=ip,
        prefix_len=int(prefix or 0),
        nic=nic.name if nic else "",
        mac=vhost_mac(spec.short_id, index),
        goalstate_address=goalstate_address,
    )
