"""The topology as data: a validated specification and the graph generated from it; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from merak.naming import topology_short_id
from services.topology import dataplanes
from services.topology.dataplanes import DataPlane


class NodeKind(StrEnum):
    """What an emulated node is; every kind except vhost is a bridge in the emulation."""

    VHOST = "vhost"
    RACK = "rack"
    VSWITCH = "vswitch"
    CORE = "core"
    GATEWAY = "gateway"
    ROUTER = "router"


@dataclass(frozen=True, slots=True)
class Nic:
    """One interface of a node; `ip` is CIDR form ("10.200.0.1/16") on vhosts, "" on switch ports."""

    name: str
    ip: str = ""


@dataclass(frozen=True, slots=True)
class Node:
    """One emulated node and its interfaces, in port order."""

    name: str
    kind: NodeKind
    nics: tuple[Nic, ...]

    @property
    def is_switch(self) -> bool:
        """Whether the node is emulated as a bridge (everything but a vhost)."""
        return self.kind is not NodeKind.VHOST


@dataclass(frozen=True, slots=True)
class Link:
    """A point-to-point link between two NICs; in a TREE the a side is the upper (switch) side."""

    uid: int
    a_node: str
    a_nic: str
    b_node: str
    b_nic: str


@dataclass(frozen=True, slots=True)
class VNicSpec:
    """A NIC declared in a CUSTOM topology; `ip` is "" or an IPv4 interface ("10.0.0.1/24")."""

    name: str
    ip: str = ""


@dataclass(frozen=True, slots=True)
class VNodeSpec:
    """A node declared in a CUSTOM topology."""

    name: str
    kind: NodeKind
    nics: tuple[VNicSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class VLinkSpec:
    """A link declared in a CUSTOM topology; `src` and `dst` each name a NIC or a node."""

    name: str
    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class TopologySpec:
    """The validated input of a topology; `type` is a topology_pb2.TopologyType value."""

    topology_id: str
    name: str
    type: int
    number_of_vhosts: int
    number_of_racks: int = 0
    vhost_per_rack: int = 0
    ports_per_vswitch: int = 0
    data_plane_cidr: str = ""
    vnodes: tuple[VNodeSpec, ...] = ()
    vlinks: tuple[VLinkSpec, ...] = ()
    backend: str = "local"
    dataplane: str = dataplanes.DEFAULT.name  # a name in services.topology.dataplanes (the proto's)
    # The data plane `dataplane` names, looked up once (an unknown name is refused here).
    plane: DataPlane = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # object.__setattr__ because the dataclass is frozen; derived from `dataplane`, not state.
        object.__setattr__(self, "plane", dataplanes.get(self.dataplane))

    @property
    def short_id(self) -> str:
        """Six hex chars derived from the topology id, short enough for kernel object names."""
        # A hash, not a prefix (Merak used id[:5]): ids sharing a prefix must not collide.
        return topology_short_id(self.topology_id)


@dataclass(frozen=True, slots=True)
class Topology:
    """A generated topology: nodes (vhosts first) and links, with O(1) lookups by name."""

    spec: TopologySpec
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    # Indexes built once: topologies reach 100,000 vhosts and callers look nodes up one by one.
    _by_name: dict[str, Node] = field(init=False, repr=False, compare=False)
    _vhosts: tuple[Node, ...] = field(init=False, repr=False, compare=False)
    _switches: tuple[Node, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {node.name: node for node in self.nodes}
        if len(by_name) != len(self.nodes):
            raise ValueError("node names must be unique")
        # object.__setattr__ because the dataclass is frozen; these are derived, not state.
        object.__setattr__(self, "_by_name", by_name)
        object.__setattr__(self, "_vhosts", tuple(n for n in self.nodes if n.kind is NodeKind.VHOST))
        object.__setattr__(self, "_switches", tuple(n for n in self.nodes if n.is_switch))

    def vhosts(self) -> tuple[Node, ...]:
        """The vhosts, in node order."""
        return self._vhosts

    def switches(self) -> tuple[Node, ...]:
        """Every bridged node (rack, vswitch, core, gateway, router), in node order."""
        return self._switches

    def node(self, name: str) -> Node:
        """The node called `name`; KeyError if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no node {name!r} in topology {self.spec.topology_id}") from None

    def datapath_ip(self, vhost_name: str) -> str:
        """The data-plane IP (no mask) of a vhost: the address of its first NIC."""
        node = self.node(vhost_name)
        if node.kind is not NodeKind.VHOST or not node.nics or not node.nics[0].ip:
            raise ValueError(f"{vhost_name!r} is not a vhost with an addressed NIC")
        return node.nics[0].ip.partition("/")[0]


def vhost_mac(short_id: str, index: int) -> str:
    """A deterministic, locally administered MAC for the data-plane NIC of the index-th vhost."""
    raw = bytes([0x02, int(short_id[0:2], 16), int(short_id[2:4], 16)]) + index.to_bytes(3, "big")
    return ":".join(f"{b:02x}" for b in raw)
