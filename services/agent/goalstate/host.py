"""Goal states applied to this agent's vhosts: one Provisioner per vhost, its Applier working on the
vhost's plane (the kernel's bridges and VXLAN for a real vhost, the fake plane's tables for a fake one).

What each resource does here (ACA programs OVS flows; this emulator's overlay is a bridge and a VXLAN
device per VPC, alcor-southbound.md §3.5 for ACA's side):
- PORT CREATE: the port's VM must exist on the vhost (found by its IP and MAC; our agent makes it, as Nova
  or Merak makes the tap for ACA): SUCCESS, else PENDING (retried by the Provisioner). DELETE: nothing
  more (the VM goes with our DeleteVms).
- NEIGHBOR: the remote port becomes a permanent neighbour and forwarding entry of the VNI, and its host
  joins the VNI's flood list; DELETE withdraws it (the host leaves the flood list with its last port).
- ROUTER, DHCP: recorded (the vhost's VPC gateway and addresses are made with the VM).
Which vhost a goal state is for: the keys of its `host_resources` (host IPs) against the vhosts'
data-plane addresses; an agent of one vhost takes any.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection, Iterable
from functools import partial

from merak.errors import FailedPrecondition
from merak.logs import get_logger
from services.agent.goalstate.plan import PENDING, NeighborWork, PortWork
from services.agent.goalstate.provisioner import Outcome, Provisioner
from services.agent.goalstate.record import RouterDhcpRecords
from services.agent.models import Neighbor
from services.agent.vhost_planes import VhostPlanes
from services.agent.vhosts import Vhost

log = get_logger(__name__)


def _us_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1_000_000)


class PlaneApplier(RouterDhcpRecords):
    """Applies goal-state work to one vhost's plane (in the agent's worker threads, under the vhost's
    lock, as every other change of that vhost); routers and DHCP entries are recorded."""

    def __init__(self, planes: VhostPlanes, vhost: Vhost) -> None:
        super().__init__()
        self._planes = planes
        self._vhost = vhost
        self._vteps: dict[int, Counter[str]] = {}  # VNI -> remote host -> its ports there
        self._neighbors: dict[tuple[int, str], str] = {}  # (VNI, IP) -> its host

    async def port(self, work: PortWork) -> Outcome:
        if work.delete:
            return Outcome()
        plane = self._planes.plane(self._vhost)
        started = time.perf_counter()

        def present() -> bool:
            for name in plane.list_vms():
                info = plane.describe_vm(name)
                if info is not None and info.ip == work.ip and info.mac.lower() == work.mac:
                    return True
            return False

        found = await self._planes.run(present)
        return Outcome(status=0 if found else PENDING, dataplane_us=_us_since(started))

    async def neighbor(self, work: NeighborWork) -> Outcome:
        plane = self._planes.plane(self._vhost)
        key = (work.vni, work.ip)
        entry = Neighbor(ip=work.ip, mac=work.mac, vtep=work.host_ip)
        started = time.perf_counter()
        async with self._planes.lock(self._vhost):
            hosts = self._vteps.setdefault(work.vni, Counter())
            before = set(hosts)
            was = self._neighbors.pop(key, None)
            if was is not None:
                hosts[was] -= 1
                if hosts[was] <= 0:
                    del hosts[was]
            if work.delete:
                if was is not None:
                    await self._planes.run(partial(plane.remove_neighbors, work.vni, [entry]))
            else:
                self._neighbors[key] = work.host_ip
                hosts[work.host_ip] += 1
                await self._planes.run(partial(plane.push_neighbors, work.vni, [entry]))
            if set(hosts) != before:
                await self._planes.run(partial(plane.set_vni_peers, work.vni, sorted(hosts)))
        return Outcome(dataplane_us=_us_since(started))


class HostProvisioners:
    """A Provisioner per vhost of this agent, chosen by a goal state's host IPs."""

    def __init__(self, planes: VhostPlanes, vhosts: Iterable[Vhost]) -> None:
        self._by_name: dict[str, Provisioner] = {}
        self._by_ip: dict[str, Provisioner] = {}
        for vhost in vhosts:
            local = frozenset({vhost.datapath_ip} - {""})
            provisioner = Provisioner(PlaneApplier(planes, vhost), local_ips=local)
            self._by_name[vhost.name] = provisioner
            if vhost.datapath_ip:
                self._by_ip[vhost.datapath_ip] = provisioner

    def pick(self, host_ips: Collection[str]) -> Provisioner:
        """The vhost a goal state is for: the one whose data-plane address it names; with one vhost, that
        one whatever it names (ACA ignores host_resources)."""
        for ip in host_ips:
            found = self._by_ip.get(ip)
            if found is not None:
                return found
        if len(self._by_name) == 1:
            return next(iter(self._by_name.values()))
        named = ", ".join(sorted(host_ips)[:5]) or "none"
        raise FailedPrecondition(
            f"host_resources: the goal state names no vhost of this agent (host IPs: {named}); an agent of "
            f"{len(self._by_name)} vhosts needs the host's data-plane address as the key"
        )

    @property
    def applied(self) -> int:
        """Goal states answered, over every vhost."""
        return sum(p.applied for p in self._by_name.values())

    async def close(self) -> None:
        """Stop every pending port's retries."""
        for provisioner in self._by_name.values():
            await provisioner.close()
