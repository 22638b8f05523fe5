"""What the local backend needs of this machine before it builds (root and a bound for real
namespaces, kernel tables sized for the namespaces to come), and this machine as the one host
of the topology service."""

from __future__ import annotations

import asyncio
import os
import socket

from merak.errors import FailedPrecondition, InvalidArgument
from merak.host import HostTuner
from services.topology.backends import HostRuntime
from services.topology.models import TopologySpec

MAX_REAL_VHOSTS = 10_000


class LocalHost:
    """This machine, as the local backend builds on it."""

    def __init__(self, tuner: HostTuner | None) -> None:
        # Sizes the machine-wide kernel settings (neighbour table, namespace limit) before a build.
        self.tuner = tuner
        self.hostname = socket.gethostname()

    def check(self, spec: TopologySpec) -> None:
        """A data plane that builds namespaces needs root, and at most MAX_REAL_VHOSTS vhosts."""
        if not spec.plane.builds_namespaces:
            return
        if os.geteuid() != 0:
            raise FailedPrecondition("the local backend needs root to build namespaces (or dataplane: fake)")
        if spec.number_of_vhosts > MAX_REAL_VHOSTS:
            raise InvalidArgument(
                "config.number_of_vhosts",
                f"the local backend builds at most {MAX_REAL_VHOSTS} real vhosts on one machine, "
                f"got {spec.number_of_vhosts}; use dataplane: fake or the kubernetes backend",
            )

    async def make_room(self, namespaces: int, reason: str) -> None:
        """Size the kernel's machine-wide tables for `namespaces` more namespaces (a tuner given)."""
        tuner = self.tuner
        if tuner is not None:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: tuner.ensure_for_new(namespaces, reason=reason)
            )

    def runtime(self) -> HostRuntime:
        """This machine as a host of the topology service: its name and primary address."""
        return HostRuntime(name=self.hostname, ip=_primary_ip())

    def close(self) -> None:
        """Release the tuner."""
        if self.tuner is not None:
            self.tuner.close()


def _primary_ip() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # no packet is sent; this picks the outgoing address
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
