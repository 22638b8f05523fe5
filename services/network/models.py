"""The network configuration as data: the validated request (spec) and what was built (state); no I/O."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from merak.callstats import ControlPlaneCall

# Addresses of a subnet that never go to a VM: network, broadcast and gateway.
RESERVED_PER_SUBNET = 3


@dataclass(frozen=True, slots=True)
class SubnetSpec:
    """A subnet as requested; `cidr` normalised, `gateway` resolved (first host unless given)."""

    id: str
    cidr: str
    gateway: str
    number_vms: int = 0


@dataclass(frozen=True, slots=True)
class VpcSpec:
    """A VPC as requested; tenant and project default to the first VPC's."""

    id: str
    tenant_id: str
    project_id: str
    cidr: str
    subnets: tuple[SubnetSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A security-group rule as requested; `remote_group` is the index of a group of the same config."""

    id: str
    name: str
    description: str
    ethertype: str
    direction: str
    protocol: str
    port_range: str
    port_min: int | None
    port_max: int | None
    remote_group: int | None
    remote_ip_prefix: str


@dataclass(frozen=True, slots=True)
class SecurityGroupSpec:
    """A security group as requested."""

    id: str
    name: str
    tenant_id: str
    project_id: str
    rules: tuple[RuleSpec, ...] = ()
    apply_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """A router as requested: it joins subnets of one VPC (`vpc` and `subnets` are indexes)."""

    id: str
    name: str
    vpc: int
    subnets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Node:
    """A compute node (emulated host) registered with the network."""

    id: str
    name: str
    datapath_ip: str = ""
    container_ip: str = ""
    mac: str = ""
    veth: str = ""
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """A validated network configuration; equal specs mean the same request."""

    netconfig_id: str
    plugin: str
    alcor_url: str
    vpcs: tuple[VpcSpec, ...]
    security_groups: tuple[SecurityGroupSpec, ...] = ()
    routers: tuple[RouterSpec, ...] = ()
    nodes: tuple[Node, ...] = ()
    # The ovn plugin's OVN, when the config names one (empty: the stack's own).
    ovn_nb: str = ""
    ovn_sb: str = ""
    # Where the config named its Alcor (`config.services[i].url`), for errors; not part of the request.
    alcor_url_field: str = field(default="config.services", compare=False)
    # Per-host address blocks of this prefix length in every subnet (0: off); see SubnetState.
    block_prefix: int = 0


@dataclass(frozen=True, slots=True)
class SubnetState:
    """A subnet that exists; `slot` numbers it within its network config (the IPAM key)."""

    id: str
    cidr: str
    gateway: str
    number_vms: int
    slot: int
    # Each host gets addresses from its own blocks of this prefix length (0: off): the IPAM keeps
    # which host owns which block, so a routed overlay routes a block, not a VM, to its host.
    block_prefix: int = 0

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The subnet as an address object."""
        return ipaddress.IPv4Network(self.cidr)

    @property
    def prefix_len(self) -> int:
        """The prefix length of the subnet."""
        return self.network.prefixlen

    @property
    def size(self) -> int:
        """Every address of the subnet, network and broadcast included."""
        return self.network.num_addresses

    @property
    def capacity(self) -> int:
        """How many addresses the subnet can hand to VMs."""
        return self.size - RESERVED_PER_SUBNET

    @property
    def gateway_offset(self) -> int:
        """The gateway's position from the network address."""
        return int(ipaddress.IPv4Address(self.gateway)) - int(self.network.network_address)

    @property
    def block_size(self) -> int:
        """Addresses per host block (0: the subnet has no blocks)."""
        return 1 << (32 - self.block_prefix) if self.block_prefix else 0

    @property
    def blocks(self) -> int:
        """How many host blocks the subnet holds (0: none)."""
        return self.size // self.block_size if self.block_prefix else 0


@dataclass(frozen=True, slots=True)
class VpcState:
    """A VPC that exists, with its VNI and anycast gateway MAC."""

    id: str
    tenant_id: str
    project_id: str
    cidr: str
    vni: int
    gateway_mac: str
    subnets: tuple[SubnetState, ...] = ()


@dataclass(frozen=True, slots=True)
class RuleState:
    """A security-group rule that exists; `remote_group_id` is the id of the remote group."""

    id: str
    name: str
    description: str
    ethertype: str
    direction: str
    protocol: str
    port_range: str
    remote_group_id: str
    remote_ip_prefix: str


@dataclass(frozen=True, slots=True)
class SecurityGroupState:
    """A security group that exists."""

    id: str
    name: str
    tenant_id: str
    project_id: str
    rules: tuple[RuleState, ...] = ()
    apply_to: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouterState:
    """A router that exists and the subnets it joins."""

    id: str
    name: str
    vpc_id: str
    subnet_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlcorEndpoints:
    """Base URLs of the Alcor services one network config talks to (kept so DELETE uses the same)."""

    vpc: str
    subnet: str
    router: str
    node: str
    sg: str


@dataclass(frozen=True, slots=True)
class OvnRemotes:
    """The OVN databases one network config lives in (kept so UPDATE, ports and DELETE use the same)."""

    nb: str
    sb: str


@dataclass(frozen=True, slots=True)
class NetworkState:
    """What a network config built, in the order of its spec (item i of a list is the spec's item i)."""

    netconfig_id: str
    plugin: str
    vpcs: tuple[VpcState, ...]
    security_groups: tuple[SecurityGroupState, ...] = ()
    routers: tuple[RouterState, ...] = ()
    nodes: tuple[Node, ...] = ()
    alcor: AlcorEndpoints | None = None
    ovn: OvnRemotes | None = None

    def subnets(self) -> list[tuple[VpcState, SubnetState]]:
        """Every subnet with its VPC."""
        return [(vpc, subnet) for vpc in self.vpcs for subnet in vpc.subnets]

    def next_slot(self) -> int:
        """The IPAM slot the next new subnet gets."""
        return 1 + max((s.slot for _, s in self.subnets()), default=-1)

    def counts(self) -> dict[str, int]:
        """How many objects of each kind this config holds."""
        return {
            "vpc": len(self.vpcs),
            "subnet": len(self.subnets()),
            "security_group": len(self.security_groups),
            "security_group_rule": sum(len(sg.rules) for sg in self.security_groups),
            "router": len(self.routers),
            "node": len(self.nodes),
        }


@dataclass(frozen=True, slots=True)
class PortRequest:
    """A VM asking for an address; `vpc_id` may be empty (the subnet tells), `subnet_id` too (one subnet)."""

    vm_id: str
    vpc_id: str = ""
    subnet_id: str = ""
    # Ids of the config's security groups the port is in (the ovn plugin makes it a member of them).
    security_group_ids: tuple[str, ...] = ()
    # The host the VM goes to: the address comes from that host's blocks when the subnet has blocks.
    host: str = ""


@dataclass(frozen=True, slots=True)
class PortAllocation:
    """The address of one VM's port."""

    vm_id: str
    vpc_id: str
    subnet_id: str
    ip: str
    prefix_len: int
    mac: str
    gateway: str
    vni: int
    gateway_mac: str
    cidr: str
    # The port's name in the control plane, when the plugin makes one (ovn: the logical switch port).
    port_name: str = ""
    # With host blocks: the prefix the host advertises for this address, its block ("10.1.3.64/26") or
    # "<ip>/32" when the address is borrowed from another host's block; "" without blocks.
    route: str = ""


def port_mac(vni: int, ip: str) -> str:
    """A VM port's MAC: 06 (locally administered, unicast), the VNI's low byte, the 4 bytes of the IP."""
    # Unique within a VPC because its subnets never overlap. The first byte differs from the vhost
    # NICs' (02) and the anycast gateway's (0e), so the three never meet whatever the VNI and IP.
    raw = bytes([0x06, vni & 0xFF]) + ipaddress.IPv4Address(ip).packed
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True, slots=True)
class PortUp:
    """Whether a VM's port came up, how long after its insert, and on which chassis (when known)."""

    vm_id: str
    up: bool
    seconds: float = 0.0
    chassis: str = ""


@dataclass(frozen=True, slots=True)
class NetworkView:
    """A network config as INFO shows it: its state and the addresses handed out per subnet slot."""

    state: NetworkState
    allocated: dict[int, int]
    # The calls its operations made into the control plane (INFO shows them), oldest first.
    calls: tuple[ControlPlaneCall, ...] = ()
