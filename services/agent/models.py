"""What the agent's data plane is asked to build and what it reports back; frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SubnetSpec:
    """One subnet of a VPC; `gateway` is an IPv4 address inside `cidr` ("10.1.0.0/24")."""

    cidr: str
    gateway: str


@dataclass(frozen=True, slots=True)
class VpcSpec:
    """A VPC as one vhost sees it: its VXLAN VNI, its subnets and the anycast gateway MAC."""

    vpc_id: str
    vni: int
    subnets: tuple[SubnetSpec, ...]
    gateway_mac: str
    # The routed shape: vx<vni> an L3 device, remote hosts' blocks routed to them (`RoutedPeer`).
    routed: bool = False


@dataclass(frozen=True, slots=True)
class VmSpec:
    """One VM: a namespace whose `eth0` has `ip/prefix_len` and `mac`, default route via `gateway`."""

    name: str
    vpc_id: str
    vni: int
    ip: str
    prefix_len: int
    mac: str
    gateway: str
    # The VM's OVN logical switch port: plugged into the vhost chassis's br-int (no VPC bridge, vni 0).
    ovn_port: str = ""


@dataclass(frozen=True, slots=True)
class VmResult:
    """The outcome for one VM of a batch; `created` is False when it already existed identically."""

    name: str
    ok: bool
    error: str = ""
    created: bool = False


@dataclass(frozen=True, slots=True)
class Neighbor:
    """A VM on another vhost: its IP and MAC, and the underlay IP (VTEP) of that vhost."""

    ip: str
    mac: str
    vtep: str


@dataclass(frozen=True, slots=True)
class RoutedPeer:
    """Another vhost of a routed VPC: its underlay IP (VTEP) and the IPv4 prefixes routed to it."""

    vtep: str
    prefixes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoutedState:
    """What a routed VNI holds on a vhost after SetVpcPeers: remote vhosts, routes, local /32s."""

    peers: int
    routes: int
    local_routes: int


@dataclass(frozen=True, slots=True)
class PingResult:
    """The outcome of pinging one destination; `rtt_ms` is the mean round trip of the replies."""

    dest: str
    ok: bool
    rtt_ms: float | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class VmInfo:
    """What the data plane itself holds of a VM (after an agent restart, its only record)."""

    ip: str
    mac: str
    vpc_id: str
