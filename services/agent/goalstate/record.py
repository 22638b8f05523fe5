"""The fake data plane's Applier: what goal states ask of a host, recorded with no kernel object (the
goal-state path at scale: parsed, checked, applied to a record, replied to)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.agent.goalstate.plan import PENDING, DhcpWork, NeighborWork, PortWork, RouterWork
from services.agent.goalstate.provisioner import Outcome


class RouterDhcpRecords:
    """Routers by id and DHCP entries (`dhcp_entries`) by MAC, recorded: what every Applier here does
    with them (a vhost's gateway and addresses are made with its VMs)."""

    def __init__(self) -> None:
        self.routers: dict[str, RouterWork] = {}
        self.dhcp_entries: dict[str, DhcpWork] = {}

    async def router(self, work: RouterWork) -> Outcome:
        if work.delete:
            self.routers.pop(work.id, None)
        else:
            self.routers[work.id] = work
        return Outcome()

    async def dhcp(self, work: DhcpWork) -> Outcome:
        if work.delete:
            self.dhcp_entries.pop(work.mac, None)
        else:
            self.dhcp_entries[work.mac] = work
        return Outcome()


class RecordingApplier(RouterDhcpRecords):
    """Ports by id, neighbours by (VNI, IP), and routers and DHCP entries as RouterDhcpRecords keeps them.
    `has_device`: whether a port's device exists yet (a fake host's VMs have none: always)."""

    def __init__(self, has_device: Callable[[str], bool] = lambda _tap: True) -> None:
        super().__init__()
        self.has_device = has_device
        self.ports: dict[str, PortWork] = {}
        self.neighbors: dict[tuple[int, str], NeighborWork] = {}

    async def port(self, work: PortWork) -> Outcome:
        if work.delete:
            self.ports.pop(work.id, None)
            return Outcome()
        if not self.has_device(work.tap):
            return Outcome(PENDING)
        self.ports[work.id] = work
        return Outcome()

    async def neighbor_batch(self, works: Sequence[NeighborWork]) -> list[Outcome]:
        for work in works:
            if work.delete:
                self.neighbors.pop((work.vni, work.ip), None)
            else:
                self.neighbors[(work.vni, work.ip)] = work
        return [Outcome()] * len(works)
