"""Where an emulated data centre lives: one interface, a registry of implementations by name.

This module owns the interface (TopologyBackend, what it reports: VhostRuntime, HostRuntime,
DestroyReport) and the registry (BackendRegistry). The implementations are the `local` and
`kubernetes` packages; `vhosts` builds the vhosts file both hand their agents, and `impair`
makes a device of the local backend's namespaces suffer faults.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from merak.errors import FailedPrecondition, InvalidArgument
from merak.v1 import common_pb2, topology_pb2
from services.topology.backends.impair import DeviceFaults
from services.topology.diff import TopologyDiff
from services.topology.models import Topology, TopologySpec

# Called with the names of vhosts that just became ready during a deployment.
ReadyCallback = Callable[[list[str]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class VhostRuntime:
    """What a backend knows about one deployed vhost right now."""

    status: common_pb2.Status.ValueType
    agent_endpoint: str = ""
    container_ip: str = ""
    hostname: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HostRuntime:
    """A machine that runs emulated hosts (this machine, or a Kubernetes node)."""

    name: str
    ip: str
    status: common_pb2.Status.ValueType = common_pb2.READY


@dataclass(frozen=True, slots=True)
class DestroyReport:
    """What a teardown removed, and what it could not."""

    namespaces: int = 0
    processes: int = 0
    logs: str = ""  # where the lab's logs were kept ("" when they went with it)
    # What is still there, each said shortly: "namespace mk-1a2b-vhost-1 (Device or resource busy)".
    left: tuple[str, ...] = ()

    def left_sentence(self, most: int = 3) -> str:
        """What could not be removed, in one short sentence ("" when nothing): the first `most` named."""
        if not self.left:
            return ""
        named = ", ".join(self.left[:most])
        more = f" and {len(self.left) - most} more" if len(self.left) > most else ""
        return f"could not remove {named}{more}"


class TopologyBackend(abc.ABC):
    """Builds, inspects and removes the emulation of a generated topology."""

    name: str

    @abc.abstractmethod
    def check(self, spec: TopologySpec) -> None:
        """Raise a MerakError when this backend cannot run `spec` (limits, privileges)."""

    @abc.abstractmethod
    async def deploy(self, topology: Topology, on_ready: ReadyCallback) -> None:
        """Build everything the topology needs; idempotent, so a retried deployment completes it."""

    @abc.abstractmethod
    async def inspect(self, topology: Topology, built: bool) -> dict[str, VhostRuntime]:
        """The current state of every vhost, read from the running system (not from a cache)."""

    @abc.abstractmethod
    async def destroy(self, spec: TopologySpec) -> DestroyReport:
        """Remove everything this topology made, and nothing else; idempotent."""

    @abc.abstractmethod
    def hosts(self) -> list[HostRuntime]:
        """The machines the emulation runs on."""

    async def check_update(self, old: Topology, new: Topology, change: TopologyDiff) -> None:
        """FailedPrecondition when the running lab cannot become `new` (what would be lost)."""
        raise FailedPrecondition(
            f"UPDATE of a running topology is not built for the {self.name} backend (use local)"
        )

    async def update(self, old: Topology, new: Topology, change: TopologyDiff) -> None:
        """Make the running lab `new`, touching only what `change` lists (and the agents it moves)."""
        raise FailedPrecondition(
            f"UPDATE of a running topology is not built for the {self.name} backend (use local)"
        )

    async def apply_faults(
        self, spec: TopologySpec, faults: Mapping[str, Mapping[str, DeviceFaults]]
    ) -> None:
        """Make each node's devices suffer `faults` (node -> device -> faults; a device healed is
        given DeviceFaults(), nothing); a node left out is not touched."""
        raise FailedPrecondition(f"impairments are not built for the {self.name} backend (use local)")

    async def check_faults(
        self, spec: TopologySpec, faults: Mapping[str, Mapping[str, DeviceFaults]], hosts: Mapping[str, int]
    ) -> None:
        """FailedPrecondition if `apply_faults` / `apply_host_faults` could not make the lab suffer
        these (what this backend or kernel lacks); changes nothing."""
        if faults:
            await self.apply_faults(spec, {})
        if hosts:
            raise FailedPrecondition(f"host faults are not built for the {self.name} backend (use local)")

    async def apply_host_faults(self, topology: Topology, states: Mapping[str, int]) -> None:
        """Make the agents of the vhosts in `states` crashed or frozen (topology.HostState); every
        other vhost's agent runs."""
        if states:
            raise FailedPrecondition(f"host faults are not built for the {self.name} backend (use local)")

    async def apply_process_faults(self, topology: Topology, states: Mapping[str, int]) -> None:
        """Hold the control plane's processes in `states` (`ovn-northd`, `ovn-controller@vhost-1` ->
        HostState) crashed or frozen; heal every other one a fault held."""
        if states:
            raise FailedPrecondition(f"process faults are not built for the {self.name} backend (use local)")

    async def process_stats(self, topology: Topology, since: float) -> topology_pb2.ProcessStatsReply:
        """CPU and memory of the topology's control-plane processes (none where not sampled)."""
        return topology_pb2.ProcessStatsReply()

    async def supervise(self, topology: Topology) -> None:  # noqa: B027 - optional hook
        """Keep a deployed topology's agents running until cancelled (restart what died); a backend
        whose platform restarts them (Kubernetes) has nothing to do."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release what the backend holds (not the topologies: they keep running)."""


BackendFactory = Callable[[], TopologyBackend]


class BackendRegistry:
    """Backends by name; an unknown name is an error that lists the known ones."""

    def __init__(self) -> None:
        self._factories: dict[str, BackendFactory] = {}
        self._instances: dict[str, TopologyBackend] = {}

    def register(self, name: str, factory: BackendFactory) -> None:
        """Make `name` available."""
        self._factories[name] = factory

    @property
    def names(self) -> list[str]:
        """Known backend names, sorted."""
        return sorted(self._factories)

    def get(self, name: str, field: str = "config.backend") -> TopologyBackend:
        """The backend called `name` (built once)."""
        if name not in self._factories:
            raise InvalidArgument(field, f"unknown backend {name!r}; known: {', '.join(self.names)}")
        if name not in self._instances:
            self._instances[name] = self._factories[name]()
        return self._instances[name]

    async def close(self) -> None:
        """Close every backend that was built."""
        for backend in self._instances.values():
            await backend.close()
