"""The data planes a topology can ask for (`config.dataplane`): each a DataPlane, chosen once by name.

Backends and the manager ask the topology's plane (`TopologySpec.plane`) what to do rather than
compare its name. `real` builds every node in the kernel (a namespace per node, veth pairs, bridges;
meshnet links and switch pods on Kubernetes) and each vhost's agent works in the vhost's namespace;
`fake` builds nothing, and its agents keep their VMs in memory, thousands of vhosts to one agent.
A new mode (an OVN chassis, goal states only) is one more DataPlane in DATAPLANES, not a branch in
every backend. The proto keeps the name as a string (wire compatibility).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from merak.errors import FailedPrecondition, InvalidArgument
from services.topology.names import ns_name


@dataclass(frozen=True, slots=True)
class DataPlane:
    """What a data plane makes a backend build, and how its agents are laid out."""

    name: str
    # Every node is built in the kernel: a namespace per node (each vhost's agent works in its
    # vhost's), links and bridges. So the local backend needs root and bounds the count, checks the
    # namespaces are there, and counts namespaces and links in its gauges.
    builds_namespaces: bool
    # Its links can be impaired (loss, rate, delay, down) and its vhosts' agents crashed or frozen.
    impairs_links: bool
    # An agent touches no kernel, so one serves many vhosts (the local backend's
    # `fake_vhosts_per_agent`) instead of each vhost having its own, up to `max_agents`.
    packs_agents: bool

    def vhost_netns(self, short_id: str, vhost: str) -> str:
        """The namespace the agent of `vhost` works in ("": the agent's own, when none is built)."""
        return ns_name(short_id, vhost) if self.builds_namespaces else ""

    def check_impairable(self) -> None:
        """FailedPrecondition when this plane has no links that faults could impair."""
        if not self.impairs_links:
            raise FailedPrecondition(f"a {self.name} dataplane has no links to impair")


REAL = DataPlane("real", builds_namespaces=True, impairs_links=True, packs_agents=False)
FAKE = DataPlane("fake", builds_namespaces=False, impairs_links=False, packs_agents=True)

DATAPLANES: Mapping[str, DataPlane] = {plane.name: plane for plane in (REAL, FAKE)}
# What a topology config that names no data plane gets.
DEFAULT = REAL


def names() -> list[str]:
    """The known data planes' names, sorted."""
    return sorted(DATAPLANES)


def get(name: str, field: str = "config.dataplane") -> DataPlane:
    """The data plane called `name`; InvalidArgument naming `field` and the known ones otherwise."""
    plane = DATAPLANES.get(name)
    if plane is None:
        raise InvalidArgument(field, f"unknown dataplane {name!r}; known: {', '.join(names())}")
    return plane
