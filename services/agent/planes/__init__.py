"""A vhost's data plane behind one interface (`Plane`), chosen by name from a registry of kinds.

This package owns the choice: `known_planes()` lists the kinds, `PlaneRegistry.get` resolves a vhosts
file's `dataplane` (an unknown name fails listing the known ones), and a `PlaneKind` says whether its
plane works in the kernel and builds it for a vhost. The kinds: `real` (package `real`: namespaces,
veths, VXLAN; imported on first use) and `fake` (`fake.py`: memory only, for scale).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from merak.errors import InvalidArgument
from services.agent.models import (
    Neighbor,
    PingResult,
    RoutedPeer,
    RoutedState,
    VmInfo,
    VmResult,
    VmSpec,
    VpcSpec,
)
from services.agent.planes.fake import FakeDataplane
from services.agent.vhosts import Vhost


class Plane(Protocol):
    """What the agent needs from a vhost's data plane (real: `Dataplane`, fake: `FakeDataplane`)."""

    def ensure_vpc(self, vpc: VpcSpec) -> None: ...
    def create_vms(self, specs: Sequence[VmSpec]) -> list[VmResult]: ...
    def delete_vms(self, names: Sequence[str]) -> list[VmResult]: ...
    def list_vms(self) -> list[str]: ...
    def describe_vm(self, name: str) -> VmInfo | None: ...
    def vm_spec(self, name: str) -> VmSpec | None: ...
    def set_vni_peers(self, vni: int, vteps: Sequence[str]) -> None: ...
    def push_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None: ...
    def remove_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None: ...
    def set_routed_peers(
        self, vni: int, peers: Sequence[RoutedPeer], local_prefixes: Sequence[str]
    ) -> RoutedState: ...
    def ping(self, vm_name: str, dests: Sequence[str], timeout: float = 1.0) -> list[PingResult]: ...
    def destroy(self) -> None: ...


@dataclass(frozen=True, slots=True)
class PlaneKind:
    """One kind of data plane: its name, whether it works in the kernel, how to build it for a vhost."""

    name: str
    touches_kernel: bool
    build: Callable[[Vhost], Plane]


class PlaneRegistry:
    """Plane kinds by name; an unknown name is an error that lists the known ones."""

    def __init__(self, kinds: Iterable[PlaneKind]) -> None:
        self._kinds = {kind.name: kind for kind in kinds}

    def get(self, name: str, field: str = "dataplane") -> PlaneKind:
        """The plane kind called `name`."""
        kind = self._kinds.get(name)
        if kind is None:
            known = ", ".join(sorted(self._kinds))
            raise InvalidArgument(field, f"unknown dataplane {name!r}; known: {known}")
        return kind


def _real_plane(vhost: Vhost) -> Plane:
    """The vhost's VPCs and VMs as namespaces."""
    # Imported on first use: an agent of fake vhosts never loads pyroute2 and the netlink helpers.
    from services.agent.planes.real import Dataplane  # noqa: PLC0415 - deferred on purpose

    return Dataplane(vhost.netns, vhost.vm_ns_prefix, vhost.datapath_ip, vhost.nic)


def _fake_plane(vhost: Vhost) -> Plane:
    """The vhost's VPCs and VMs in memory."""
    return FakeDataplane(vhost.datapath_ip)


def known_planes() -> PlaneRegistry:
    """Every data plane an agent can serve a vhost with."""
    return PlaneRegistry(
        [
            PlaneKind("real", touches_kernel=True, build=_real_plane),
            PlaneKind("fake", touches_kernel=False, build=_fake_plane),
        ]
    )
