"""The vhosts an agent serves, each with its data plane, its lock, and the threads its kernel work runs on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from merak.errors import InvalidArgument
from merak.host import HostTuner
from services.agent.metrics import AgentMetrics
from services.agent.planes import Plane, PlaneKind
from services.agent.vhosts import Vhost, VhostSet

T = TypeVar("T")


class VhostPlanes:
    """Each served vhost's plane (built on first use) and lock; runs plane calls where they belong."""

    def __init__(
        self,
        vhosts: VhostSet,
        kind: PlaneKind,
        metrics: AgentMetrics,
        *,
        workers: int,
        host: HostTuner | None,
    ) -> None:
        self.vhosts = vhosts
        self.kind = kind
        self._metrics = metrics
        # Real VMs share the machine's neighbour table and namespace limit: sized before they grow.
        self._host = host
        self._planes: dict[str, Plane] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-netns")

    def close(self) -> None:
        """Stop the worker threads and release the host tuner."""
        self._executor.shutdown(wait=True)
        if self._host is not None:
            self._host.close()

    def vhost(self, name: str) -> Vhost:
        """The served vhost called `name` (an empty name: the only one, if there is one)."""
        vhost = self.vhosts.vhosts.get(name)
        if vhost is None and not name and len(self.vhosts.vhosts) == 1:
            vhost = next(iter(self.vhosts.vhosts.values()))
        if vhost is None:
            served = ", ".join(list(self.vhosts.vhosts)[:5]) or "none"
            raise InvalidArgument("vhost", f"this agent does not serve vhost {name!r} (serves: {served}…)")
        return vhost

    def plane(self, vhost: Vhost) -> Plane:
        """The vhost's data plane, built (and its VMs counted) on first use."""
        plane = self._planes.get(vhost.name)
        if plane is None:
            plane = self.kind.build(vhost)
            # VMs from before a restart (a fake plane starts empty).
            self._metrics.vms.inc(len(plane.list_vms()))
            self._planes[vhost.name] = plane
        return plane

    def lock(self, vhost: Vhost) -> asyncio.Lock:
        """The lock that serializes changes to the vhost's plane."""
        return self._locks.setdefault(vhost.name, asyncio.Lock())

    async def run(self, func: Callable[[], T]) -> T:
        """`func()`, on a worker thread when the plane works in the kernel."""
        # Kernel work blocks and enters namespaces (per thread): never on the event loop's thread.
        # A plane in memory is quicker than the hop to a thread, and a thread would compete with the
        # loop for the interpreter while the loop times calls to the control plane.
        if not self.kind.touches_kernel:
            return func()
        return await asyncio.get_running_loop().run_in_executor(self._executor, func)

    async def size_host(self, new_namespaces: int, reason: str) -> None:
        """Grow the machine's limits for `new_namespaces` more (a plane in the kernel only)."""
        host = self._host
        if host is not None and self.kind.touches_kernel:
            await self.run(partial(host.ensure_for_new, new_namespaces, reason=reason))
