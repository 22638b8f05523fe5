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
Which vhost a goal state is for: on a vhost's own goal-state server, that vhost; on the agent's server,
the keys of its `host_resources` (host IPs) against the vhosts' data-plane addresses (an agent of one
vhost takes any).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from merak.errors import FailedPrecondition, Unavailable
from merak.grpcserver import GrpcServer
from merak.logs import get_logger
from merak.naming import vni_for_vpc
from services.agent.goalstate.plan import FAILURE, PENDING, SUCCESS, NeighborWork, PortWork
from services.agent.goalstate.provisioner import (
    GoalStateProvisionerServicer,
    Outcome,
    Provisioner,
    registration,
)
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
        self._vteps: dict[int, Counter[str]] = {}  # VNI -> remote host -> its entries there
        self._neighbors: dict[int, dict[str, Neighbor]] = {}  # VNI -> IP -> the entry goal states gave
        # VNIs whose VPC was not on this vhost yet when neighbours came (Alcor pushes them as soon as a
        # port is bound, before its VM is made): their entries go in once a port's VM is there.
        self._deferred: set[int] = set()

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
        if found and work.vpc_id:
            await self._flush(vni_for_vpc(work.vpc_id))
        return Outcome(status=SUCCESS if found else PENDING, dataplane_us=_us_since(started))

    async def neighbor_batch(self, works: Sequence[NeighborWork]) -> list[Outcome]:
        """A goal state's neighbours, one plane call per VPC: the entries pushed or withdrawn, and the flood
        list when the VPC's remote hosts changed."""
        # The VPC's overlay here is keyed by our VNI of the VPC (the agent made its VMs there before any
        # goal state); Alcor's tunnel_id for it is another number, on a VPC we know by id.
        by_vni: dict[int, list[int]] = {}
        for i, work in enumerate(works):
            by_vni.setdefault(vni_for_vpc(work.vpc_id) if work.vpc_id else work.vni, []).append(i)
        outcomes = [Outcome()] * len(works)
        for vni, indexes in by_vni.items():
            started = time.perf_counter()
            try:
                await self._apply_neighbors(vni, [works[i] for i in indexes])
                outcome = Outcome(dataplane_us=_us_since(started))
            except Exception as exc:
                log.warning(
                    "goal_state_neighbors_failed", vni=vni, neighbors=len(indexes), error=str(exc)[:300]
                )
                outcome = Outcome(FAILURE)
            for i in indexes:
                outcomes[i] = outcome
        return outcomes

    async def _apply_neighbors(self, vni: int, works: Sequence[NeighborWork]) -> None:
        plane = self._planes.plane(self._vhost)
        async with self._planes.lock(self._vhost):
            table = self._neighbors.setdefault(vni, {})
            hosts = self._vteps.setdefault(vni, Counter())
            before = set(hosts)
            touched = {work.ip for work in works}
            was = {ip: table[ip] for ip in touched if ip in table}
            for work in works:
                old = table.pop(work.ip, None)
                if old is not None:
                    hosts[old.vtep] -= 1
                    if hosts[old.vtep] <= 0:
                        del hosts[old.vtep]
                if not work.delete:
                    table[work.ip] = Neighbor(ip=work.ip, mac=work.mac, vtep=work.host_ip)
                    hosts[work.host_ip] += 1
            if vni in self._deferred:
                return  # kept: they go in with the rest once the VPC is here
            removes = [was[ip] for ip in touched if ip in was and ip not in table]
            pushes = [table[ip] for ip in touched if ip in table]
            peers = sorted(hosts) if set(hosts) != before else None

            def program() -> None:
                if removes:
                    plane.remove_neighbors(vni, removes)
                if pushes:
                    plane.push_neighbors(vni, pushes)
                if peers is not None:
                    plane.set_vni_peers(vni, peers)

            try:
                await self._planes.run(program)
            except FailedPrecondition:
                # The VPC is not on this vhost yet (its first VM is still being made): ACA takes
                # neighbours before any local port, and so does this host, later.
                self._deferred.add(vni)

    async def _flush(self, vni: int) -> None:
        """Program the neighbours kept for `vni` while its VPC was not here (a port's VM made it)."""
        if vni not in self._deferred:
            return
        plane = self._planes.plane(self._vhost)
        async with self._planes.lock(self._vhost):
            if vni not in self._deferred:
                return
            entries = list(self._neighbors.get(vni, {}).values())
            peers = sorted(self._vteps.get(vni, ()))

            def program() -> None:
                if entries:
                    plane.push_neighbors(vni, entries)
                plane.set_vni_peers(vni, peers)

            await self._planes.run(program)
            self._deferred.discard(vni)
            log.info("goal_state_neighbors_applied_later", vni=vni, neighbors=len(entries))


class HostProvisioners:
    """A Provisioner per vhost of this agent, chosen by a goal state's host IPs on the agent's own server,
    and served on the vhost's own goal-state address (`serve`) once its network uses Alcor.

    `netns_fd`: the namespace the vhosts' addresses are in (this machine's, where Alcor runs)."""

    def __init__(
        self,
        planes: VhostPlanes,
        vhosts: Iterable[Vhost],
        netns_fd: int | None = None,
        marker: Path | None = None,
    ) -> None:
        self._netns_fd = netns_fd
        # The vhosts that serve goal states, one name a line: an agent started again serves them at once
        # (Alcor reaches a host whenever it likes, not only after the host's next port).
        self._marker = marker
        self._vhosts: dict[str, Vhost] = {}
        self._servers: dict[str, GrpcServer] = {}
        self._serving = asyncio.Lock()
        self._by_name: dict[str, Provisioner] = {}
        self._by_ip: dict[str, Provisioner] = {}
        for vhost in vhosts:
            self._vhosts[vhost.name] = vhost
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

    async def serve(self, name: str) -> str:
        """Serve the vhost's GoalStateProvisioner on its goal-state address (plaintext, as ACA on :50001),
        from now until close; the address ("" when the vhost has none). Again: nothing more."""
        vhost = self._vhosts[name]
        address = vhost.goalstate_address
        if not address:
            return ""
        if name in self._servers:  # every port of the vhost asks: no lock, no look at the other vhosts
            return _where(self._servers[name])
        async with self._serving:
            if name in self._servers:
                return _where(self._servers[name])
            provisioner = self._by_name[name]
            server = GrpcServer(
                address, [registration(GoalStateProvisionerServicer(lambda _hosts: provisioner))]
            )
            try:
                await server.start(netns_fd=self._netns_fd, plaintext=True)
            except (OSError, RuntimeError) as exc:
                raise Unavailable(
                    f"vhost {name}: cannot serve goal states on {address} ({exc}); is another lab's "
                    "agent listening there?"
                ) from exc
            self._servers[name] = server
            if self._marker is not None and name not in self._marked():
                with self._marker.open("a") as out:
                    out.write(f"{name}\n")
        log.info("goalstate_serving", vhost=name, address=_where(server))
        return _where(server)

    def _marked(self) -> set[str]:
        try:
            return set(self._marker.read_text().split()) if self._marker is not None else set()
        except FileNotFoundError:
            return set()

    async def resume(self) -> list[str]:
        """Serve goal states again on the vhosts that did before this agent started (its marker file)."""
        names = sorted(self._marked() & set(self._vhosts))
        for name in names:
            await self.serve(name)
        return names

    async def wait_ready(self, name: str, port_id: str, timeout: float) -> float | None:
        """When the vhost applied the goal state of the port's CREATE (time.monotonic()), waiting up to
        `timeout` seconds; None if it did not."""
        return await self._by_name[name].wait_ready(port_id, timeout)

    @property
    def serving(self) -> dict[str, str]:
        """Where each vhost serves goal states now (the port bound, for an address of port 0), by name."""
        return {name: _where(s) for name, s in self._servers.items()}

    @property
    def applied(self) -> int:
        """Goal states answered, over every vhost."""
        return sum(p.applied for p in self._by_name.values())

    async def close(self) -> None:
        """Stop serving goal states, and every pending port's retries."""
        servers, self._servers = list(self._servers.values()), {}
        await asyncio.gather(*(server.stop(1.0) for server in servers))
        for provisioner in self._by_name.values():
            await provisioner.close()


def _where(server: GrpcServer) -> str:
    """Where a goal-state server listens (the port bound, for an address of port 0)."""
    return f"{server.address.rpartition(':')[0]}:{server.port}"
