"""What changes between a running topology and its updated spec: the nodes and links that go and come.
Pure; the backends make the kernel follow (a node or link in both is not touched)."""

from __future__ import annotations

from dataclasses import dataclass, field

from merak.errors import InvalidArgument
from services.topology.models import Link, Node, Topology, TopologySpec

# What an UPDATE may not change (the lab's identity and every vhost's address), by config field.
_FIXED = {
    "config.topology_type": "type",
    "config.backend": "backend",
    "config.dataplane": "dataplane",
    "config.data_plane_cidr": "data_plane_cidr",
}


def _link_key(link: Link) -> tuple[str, str, str, str]:
    return (link.a_node, link.a_nic, link.b_node, link.b_nic)


@dataclass(frozen=True, slots=True)
class TopologyDiff:
    """Nodes and links to remove and to add; everything else stays as it is."""

    removed_nodes: tuple[Node, ...]
    added_nodes: tuple[Node, ...]
    removed_links: tuple[Link, ...]
    added_links: tuple[Link, ...]
    # Where each vhost that goes was among the vhosts (its VMs' namespaces are named after it).
    positions: dict[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not (self.removed_nodes or self.added_nodes or self.removed_links or self.added_links)

    def summary(self) -> str:
        """For logs and replies: "+3 vhosts, +1 switch, +4 links, -1 link"."""
        parts = []
        for sign, nodes, links in (
            ("+", self.added_nodes, self.added_links),
            ("-", self.removed_nodes, self.removed_links),
        ):
            vhosts = sum(1 for n in nodes if not n.is_switch)
            switches = len(nodes) - vhosts
            for count, noun in ((vhosts, "vhost"), (switches, "switch"), (len(links), "link")):
                if count:
                    plural = "es" if noun == "switch" else "s"
                    parts.append(f"{sign}{count} {noun}{plural if count > 1 else ''}")
        return ", ".join(parts) or "no change"


def check_update(old: TopologySpec, new: TopologySpec) -> None:
    """InvalidArgument naming a field an UPDATE cannot change (DELETE and CREATE for those)."""
    for name, attribute in _FIXED.items():
        if getattr(old, attribute) != getattr(new, attribute):
            raise InvalidArgument(
                name,
                f"{getattr(new, attribute)!r}: a running topology keeps its {attribute} "
                f"({getattr(old, attribute)!r}); DELETE it and CREATE it again to change it",
            )


def check_vhosts(old: Topology, new: Topology) -> None:
    """A vhost that stays keeps its position among the vhosts (its VMs' namespaces and its MAC derive
    from it) and its NICs and addresses: vhosts come and go at the end (CUSTOM: keep their order)."""
    before = {node.name: (i, node) for i, node in enumerate(old.vhosts())}
    for i, node in enumerate(new.vhosts()):
        if node.name not in before:
            continue
        j, was = before[node.name]
        if i != j:
            raise InvalidArgument(
                "config.vnodes",
                f"vhost {node.name} would move from position {j} to {i} among the vhosts; a running lab "
                "keeps its vhosts' order: add vhosts after the others, remove them from the end",
            )
        # A NIC that stays keeps its address (one that goes with its link may go); the first NIC,
        # which carries the vhost's MAC, stays the first.
        now = {nic.name: nic.ip for nic in node.nics}
        changed = any(nic.name in now and now[nic.name] != nic.ip for nic in was.nics)
        if changed or (was.nics[:1] and node.nics[:1] and was.nics[0].name != node.nics[0].name):
            raise InvalidArgument(
                "config.vnodes",
                f"vhost {node.name}'s addresses would change; a running lab's vhosts keep their "
                "data-plane NIC and addresses",
            )


def diff(old: Topology, new: Topology) -> TopologyDiff:
    """Nodes by name (a node whose kind changed goes and comes back), links by both ends."""
    old_nodes = {n.name: n for n in old.nodes}
    new_nodes = {n.name: n for n in new.nodes}
    kept = {
        name for name, node in new_nodes.items() if name in old_nodes and old_nodes[name].kind is node.kind
    }
    old_links = {_link_key(link): link for link in old.links}
    new_links = {_link_key(link): link for link in new.links}
    # A link between nodes that stay, with the same NICs at both ends, stays.
    stays = {key for key in new_links if key in old_links and key[0] in kept and key[2] in kept}
    return TopologyDiff(
        removed_nodes=tuple(n for n in old.nodes if n.name not in kept),
        added_nodes=tuple(n for n in new.nodes if n.name not in kept),
        removed_links=tuple(link for key, link in old_links.items() if key not in stays),
        added_links=tuple(link for key, link in new_links.items() if key not in stays),
        positions={n.name: i for i, n in enumerate(old.vhosts()) if n.name not in kept},
    )


def merged(first: TopologyDiff, second: TopologyDiff) -> TopologyDiff:
    """Both diffs' work (for a lab between two graphs: an update that failed half way); every step of
    an update is idempotent, so doing a step twice, or one that was done, is harmless."""

    def nodes(a: tuple[Node, ...], b: tuple[Node, ...]) -> tuple[Node, ...]:
        return tuple({n.name: n for n in (*a, *b)}.values())

    def links(a: tuple[Link, ...], b: tuple[Link, ...]) -> tuple[Link, ...]:
        return tuple({_link_key(link): link for link in (*a, *b)}.values())

    return TopologyDiff(
        removed_nodes=nodes(first.removed_nodes, second.removed_nodes),
        added_nodes=nodes(first.added_nodes, second.added_nodes),
        removed_links=links(first.removed_links, second.removed_links),
        added_links=links(first.added_links, second.added_links),
        positions={**second.positions, **first.positions},
    )
