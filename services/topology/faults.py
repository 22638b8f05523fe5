"""A lab's impairments as devices to set: from a SetFaultsRequest (links named by a node and one of
its NICs, partitions between groups of vhosts) to what each node's devices must suffer. Pure: the
local backend makes the kernel hold it (backends/impair.py)."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import replace

from merak.errors import InvalidArgument
from merak.faultspec import CENTRAL_PROCESSES, HOST_PROCESSES, process_where
from merak.v1 import topology_pb2
from services.topology.backends.impair import DeviceFaults
from services.topology.models import NodeKind, Topology

# node -> device -> what it suffers
Plan = dict[str, dict[str, DeviceFaults]]
MAX_FAULTS = 10_000


def plan(topology: Topology, request: topology_pb2.SetFaultsRequest) -> Plan:
    """What each device suffers; InvalidArgument naming the first bad field."""
    if len(request.links) + len(request.partitions) > MAX_FAULTS:
        raise InvalidArgument("links", f"at most {MAX_FAULTS} links and partitions in one request")
    peers: dict[tuple[str, str], tuple[str, str]] = {}
    for link in topology.links:
        peers[(link.a_node, link.a_nic)] = (link.b_node, link.b_nic)
        peers[(link.b_node, link.b_nic)] = (link.a_node, link.a_nic)
    nodes = {node.name: node for node in topology.nodes}
    result: defaultdict[str, dict[str, DeviceFaults]] = defaultdict(dict)
    for i, fault in enumerate(request.links):
        where = f"links[{i}]"
        node = nodes.get(fault.node)
        if node is None:
            raise InvalidArgument(f"{where}.node", f"{fault.node[:64]!r} is not a node of the topology")
        nic = fault.nic or (node.nics[0].name if not node.is_switch and node.nics else "")
        if (fault.node, nic) not in peers:
            names = ", ".join(n.name for n in node.nics)
            raise InvalidArgument(
                f"{where}.nic", f"{fault.nic[:64]!r} is not a linked NIC of {fault.node} ({names})"
            )
        faults = DeviceFaults(
            down=fault.down,
            rate_bps=fault.rate_bps,
            loss_percent=fault.loss_percent,
            delay_ms=fault.delay_ms,
            jitter_ms=fault.jitter_ms,
        )
        faults.check(f"{where}.")
        for end_node, end_nic in ((fault.node, nic), peers[(fault.node, nic)]):
            if end_nic in result[end_node]:
                raise InvalidArgument(where, f"the link of {end_node}/{end_nic} is listed twice")
            result[end_node][end_nic] = faults
    vhost_ip = {
        node.name: str(ipaddress.IPv4Interface(node.nics[0].ip).ip)
        for node in topology.vhosts()
        if node.nics and node.nics[0].ip
    }
    racks = _rack_vhosts(topology) if request.partitions else {}
    for i, partition in enumerate(request.partitions):
        sides: list[list[str]] = []
        for side, members in (("side_a", partition.side_a), ("side_b", partition.side_b)):
            if not members:
                raise InvalidArgument(f"partitions[{i}].{side}", "at least one vhost or rack")
            expanded: list[str] = []
            for member in members:
                if member in vhost_ip:
                    expanded.append(member)
                elif racks.get(member):
                    expanded.extend(racks[member])
                else:
                    raise InvalidArgument(
                        f"partitions[{i}].{side}", f"{member[:64]!r} is not a vhost or rack of the topology"
                    )
            sides.append(sorted(set(expanded)))
        if set(sides[0]) & set(sides[1]):
            raise InvalidArgument(f"partitions[{i}]", "a vhost cannot be on both sides")
        for own, other in (sides, sides[::-1]):
            for name in own:
                nic = nodes[name].nics[0].name
                current = result[name].get(nic, DeviceFaults())
                blocked = tuple(sorted({*current.blocked, *(vhost_ip[o] for o in other)}))
                result[name][nic] = replace(current, blocked=blocked)
    return dict(result)


def _rack_vhosts(topology: Topology) -> dict[str, list[str]]:
    """rack -> the vhosts linked to it (its top-of-rack ports)."""
    kinds = {node.name: node.kind for node in topology.nodes}
    racks: defaultdict[str, list[str]] = defaultdict(list)
    for link in topology.links:
        for rack, vhost in ((link.a_node, link.b_node), (link.b_node, link.a_node)):
            if kinds.get(rack) is NodeKind.RACK and kinds.get(vhost) is NodeKind.VHOST:
                racks[rack].append(vhost)
    return dict(racks)


def host_plan(topology: Topology, request: topology_pb2.SetFaultsRequest) -> dict[str, int]:
    """vhost -> HostState of the hosts the request faults (HOST_RUNNING ones left out)."""
    vhosts = {node.name for node in topology.vhosts()}
    known = set(topology_pb2.HostState.values())
    states: dict[str, int] = {}
    for i, fault in enumerate(request.hosts):
        if fault.vhost not in vhosts:
            raise InvalidArgument(f"hosts[{i}].vhost", f"{fault.vhost[:64]!r} is not a vhost of the topology")
        if fault.state not in known:
            raise InvalidArgument(f"hosts[{i}].state", f"unknown value {int(fault.state)}")
        if fault.vhost in states:
            raise InvalidArgument(f"hosts[{i}].vhost", f"{fault.vhost} is listed twice")
        if fault.state != topology_pb2.HOST_RUNNING:
            states[fault.vhost] = int(fault.state)
    return states


def process_plan(topology: Topology, request: topology_pb2.SetFaultsRequest) -> dict[str, int]:
    """`ovn-northd` / `ovn-controller@vhost-1` -> HostState of the processes the request faults."""
    vhosts = {node.name for node in topology.vhosts()}
    known = set(topology_pb2.HostState.values())
    states: dict[str, int] = {}
    for i, fault in enumerate(request.processes):
        where = f"processes[{i}]"
        if fault.process in CENTRAL_PROCESSES:
            if fault.vhost:
                raise InvalidArgument(f"{where}.vhost", f"{fault.process} is the central's: name no vhost")
        elif fault.process in HOST_PROCESSES:
            if fault.vhost not in vhosts:
                raise InvalidArgument(
                    f"{where}.vhost", f"{fault.vhost[:64]!r} is not a vhost of the topology"
                )
        else:
            known_names = ", ".join((*CENTRAL_PROCESSES, *HOST_PROCESSES))
            raise InvalidArgument(f"{where}.process", f"{fault.process[:64]!r} is not one of {known_names}")
        if fault.state not in known:
            raise InvalidArgument(f"{where}.state", f"unknown value {int(fault.state)}")
        target = process_where(fault)
        if target in states:
            raise InvalidArgument(where, f"{target} is listed twice")
        if fault.state != topology_pb2.HOST_RUNNING:
            states[target] = int(fault.state)
    return states
