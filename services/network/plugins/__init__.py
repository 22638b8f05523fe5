"""The control plane under test behind one interface (NetworkPlugin), chosen per config by name."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager

from merak.errors import FailedPrecondition, InvalidArgument
from services.network.metrics import NetworkMetrics
from services.network.models import NetworkSpec, NetworkState, PortAllocation, PortRequest, PortUp


class DeleteProgress:
    """The steps of a DELETE already done in the control plane, and where to record new ones."""

    def __init__(
        self, done: set[str] | None = None, record: Callable[[str], Awaitable[None]] | None = None
    ) -> None:
        self.done = set(done or ())
        self._record = record

    async def mark(self, step: str) -> None:
        """Note that `step` is done (and persist it, so a retried DELETE skips it)."""
        self.done.add(step)
        if self._record is not None:
            await self._record(step)


class NetworkPlugin(abc.ABC):
    """Makes and removes a network config's objects in one control plane."""

    name: str
    # Whether VM addresses come from this service's IPAM (AllocatePorts) rather than the control plane.
    allocates_ports: bool = False

    def __init__(self, metrics: NetworkMetrics) -> None:
        self.metrics = metrics

    def timed(self, operation: str) -> AbstractContextManager[None]:
        """Time the block as one call of this plugin into its control plane."""
        return self.metrics.timed(self.name, operation)

    def check(self, spec: NetworkSpec) -> None:  # noqa: B027 - optional hook
        """Raise InvalidArgument when this control plane cannot take `spec` (before anything is made)."""

    @abc.abstractmethod
    async def apply(self, spec: NetworkSpec, current: NetworkState | None) -> NetworkState:
        """Make what `spec` holds beyond `current` (None on CREATE); undo this call's work on failure."""

    @abc.abstractmethod
    async def remove(
        self,
        state: NetworkState,
        keep: NetworkState | None = None,
        progress: DeleteProgress | None = None,
        *,
        best_effort: bool = False,
    ) -> None:
        """Remove what `state` holds beyond `keep` (None: everything), skipping steps already done."""

    async def make_ports(
        self, state: NetworkState, requests: Sequence[PortRequest], allocations: list[PortAllocation]
    ) -> list[PortAllocation]:
        """Make the VMs' ports in the control plane once the IPAM gave them addresses (a plugin that
        `allocates_ports`); returns the allocations as the caller gets them. Raising undoes the call."""
        return allocations

    async def release_ports(self, state: NetworkState, vm_ids: Sequence[str]) -> None:  # noqa: B027
        """Remove the VMs' ports from the control plane, before their addresses go back to the IPAM."""

    async def wait_ports_up(self, state: NetworkState, vm_ids: Sequence[str], timeout: float) -> list[PortUp]:
        """Wait until the VMs' ports are up in the control plane, at most `timeout` seconds."""
        raise FailedPrecondition(
            f"network config {state.netconfig_id!r} uses the {self.name} plugin; "
            "only the ovn plugin's ports come up in a control plane (WaitPortsUp)"
        )

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the plugin holds."""


class PluginRegistry:
    """Plugins by name; an unknown name is an error that lists the known ones."""

    def __init__(self) -> None:
        self._plugins: dict[str, NetworkPlugin] = {}

    def register(self, plugin: NetworkPlugin) -> None:
        """Make `plugin` available under its name."""
        self._plugins[plugin.name] = plugin

    @property
    def names(self) -> list[str]:
        """Known plugin names, sorted."""
        return sorted(self._plugins)

    def get(self, name: str, field: str = "config.plugin") -> NetworkPlugin:
        """The plugin called `name`."""
        plugin = self._plugins.get(name)
        if plugin is None:
            raise InvalidArgument(field, f"unknown plugin {name!r}; known: {', '.join(self.names)}")
        return plugin

    async def close(self) -> None:
        """Close every plugin."""
        for plugin in self._plugins.values():
            await plugin.close()
