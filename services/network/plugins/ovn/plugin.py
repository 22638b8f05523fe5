"""The ovn plugin: a network config made in OVN's northbound database through ovsdbapp.

Per VPC a Logical_Router; per subnet a Logical_Switch, its Logical_Router_Port on the VPC's router (the
gateway IP and a MAC of the subnet's own) and the switch's router-type port; per security group a
Port_Group with stateful ACLs, and per config a drop group (acls.py); per VM a Logical_Switch_Port
(AllocatePorts), its addresses from this service's IPAM. One transaction per call; every row carries its
network config in external_ids, so DELETE removes exactly what the config made. WaitPortsUp answers from
the ports' insert and `up` times (watch.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from merak.controlplane import ControlPlaneAllow
from merak.errors import FailedPrecondition, MerakError
from merak.logs import get_logger
from services.network.metrics import NetworkMetrics
from services.network.models import (
    NetworkSpec,
    NetworkState,
    OvnRemotes,
    PortAllocation,
    PortRequest,
    PortUp,
)
from services.network.plugins import DeleteProgress, NetworkPlugin
from services.network.plugins.grow import grow_state
from services.network.plugins.ovn import names
from services.network.plugins.ovn.acls import Acl, drop_acls, group_acls
from services.network.plugins.ovn.commands import DeleteOwned, DeletePorts, EnsurePorts, PortStates, VmPort
from services.network.plugins.ovn.ovsdb import NbClient, SbClient
from services.network.plugins.ovn.watch import PortWatch

log = get_logger(__name__)

NOT_RUNNING = (
    "OVN is not running in this stack: the network service knows no OVN northbound database "
    "(MERAK_OVN_NB; the local stack sets it when it runs OVN central); or name one in config.ovn_nb"
)
# After the southbound database failed to answer, chassis are not asked for again for this long.
SB_RETRY_SECONDS = 30.0


class OvnPlugin(NetworkPlugin):
    """Network configs as OVN logical routers, switches, port groups and ports."""

    name = "ovn"
    allocates_ports = True

    def __init__(
        self,
        metrics: NetworkMetrics,
        *,
        nb: str,
        sb: str,
        timeout: float,
        control_plane: ControlPlaneAllow | None = None,
    ) -> None:
        super().__init__(metrics)
        self.stack = OvnRemotes(nb, sb)
        # The OVN databases a config may name besides the stack's own (MERAK_CONTROL_PLANE_ALLOW).
        self.control_plane = control_plane or ControlPlaneAllow()
        self.timeout = timeout
        self._nb: dict[str, NbClient] = {}
        self._sb: dict[str, SbClient] = {}
        self._sb_failed: dict[str, float] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    # --- network configs ---------------------------------------------------------------------------

    def check(self, spec: NetworkSpec) -> None:
        """An OVN to write to: the config's, when the operator allowed it (the stack's own always is), or
        the stack's."""
        for name in ("ovn_nb", "ovn_sb"):
            remote = getattr(spec, name)
            if remote and remote not in (self.stack.nb, self.stack.sb):
                self.control_plane.check_ovsdb(f"config.{name}", remote)
        if not spec.ovn_nb and not self.stack.nb:
            raise FailedPrecondition(NOT_RUNNING)

    def remotes(self, spec: NetworkSpec) -> OvnRemotes:
        """The config's OVN, else the stack's (a config's NB goes with its own SB, never the stack's)."""
        if spec.ovn_nb:
            return OvnRemotes(spec.ovn_nb, spec.ovn_sb)
        return OvnRemotes(self.stack.nb, spec.ovn_sb or self.stack.sb)

    async def apply(self, spec: NetworkSpec, current: NetworkState | None) -> NetworkState:
        """Routers, switches, router ports and port groups for what is new, in one transaction."""
        with self.timed("apply"):
            remotes = current.ovn if current is not None and current.ovn is not None else self.remotes(spec)
            state = replace(grow_state(spec, current, self.name, lambda: (0, "")), ovn=remotes)
            nb = await self._client(remotes.nb)
            await nb.transact(*_network_commands(nb.api, state, current))
            return state

    async def remove(
        self,
        state: NetworkState,
        keep: NetworkState | None = None,
        progress: DeleteProgress | None = None,
        *,
        best_effort: bool = False,
    ) -> None:
        """Everything of the config beyond `keep` (None: everything, the VMs' ports included), in one
        transaction; with `best_effort`, a failure is logged instead of raised."""
        if state.ovn is None:
            return
        with self.timed("remove"):
            try:
                nb = await self._client(state.ovn.nb)
                command = _delete_command(nb.api, state, keep)
                await nb.transact(command)
            except MerakError as exc:
                if not best_effort:
                    raise
                log.warning("ovn_remove_failed", netconfig_id=state.netconfig_id, error=str(exc))
                return
        if keep is None:
            nb.watch.forget_config(state.netconfig_id)
            self.metrics.ovn_ports.labels("removed").inc(command.result)

    # --- ports -------------------------------------------------------------------------------------

    async def make_ports(
        self, state: NetworkState, requests: Sequence[PortRequest], allocations: list[PortAllocation]
    ) -> list[PortAllocation]:
        """Each VM's logical switch port in its subnet's switch and its groups, in one transaction (a VM
        asked for again keeps its port); the allocations carry the port's name and the router port MAC."""
        nb = await self._client(_remotes(state).nb)
        netconfig_id = state.netconfig_id
        slots = {subnet.id: subnet.slot for _, subnet in state.subnets()}
        drop = names.drop_group(netconfig_id)
        config_groups = [names.port_group(netconfig_id, g.id) for g in state.security_groups] + [drop]
        ports: dict[str, VmPort] = {}
        made: list[PortAllocation] = []
        for request, allocation in zip(requests, allocations, strict=True):
            port = names.vm_port(netconfig_id, allocation.vm_id)
            groups = tuple(
                dict.fromkeys(names.port_group(netconfig_id, g) for g in request.security_group_ids)
            )
            external_ids = names.owned(
                netconfig_id,
                **{
                    names.VM: allocation.vm_id,
                    names.VPC: allocation.vpc_id,
                    names.SUBNET: allocation.subnet_id,
                },
            )
            ports[port] = VmPort(
                port,
                names.switch(netconfig_id, allocation.subnet_id),
                f"{allocation.mac} {allocation.ip}",
                (*groups, drop) if groups else (),
                external_ids,
            )
            mac = names.router_mac(netconfig_id, slots[allocation.subnet_id])
            made.append(replace(allocation, port_name=port, gateway_mac=mac, vni=0))
        with self.timed("make_ports"):
            nb.watch.track(netconfig_id, ports)
            command = EnsurePorts(nb.api, netconfig_id, list(ports.values()), config_groups)
            try:
                committed = await nb.transact(command)
            except Exception:
                nb.watch.abandon(ports)
                raise
        nb.watch.committed(ports, set(command.result), committed)
        self.metrics.ovn_ports.labels("made").inc(len(command.result))
        return made

    async def release_ports(self, state: NetworkState, vm_ids: Sequence[str]) -> None:
        """The VMs' logical switch ports removed, in one transaction."""
        nb = await self._client(_remotes(state).nb)
        port_names = [names.vm_port(state.netconfig_id, vm_id) for vm_id in vm_ids]
        command = DeletePorts(nb.api, state.netconfig_id, port_names)
        with self.timed("release_ports"):
            await nb.transact(command)
        nb.watch.forget(port_names)
        self.metrics.ovn_ports.labels("removed").inc(len(command.result))

    async def wait_ports_up(self, state: NetworkState, vm_ids: Sequence[str], timeout: float) -> list[PortUp]:
        """Per VM, whether its port is up in NB by `timeout` (returns once all are); a VM without a port
        is not up at once."""
        started = time.monotonic()
        remotes = _remotes(state)
        nb = await self._client(remotes.nb)
        netconfig_id = state.netconfig_id
        port_of = {vm_id: names.vm_port(netconfig_id, vm_id) for vm_id in vm_ids}
        for port in port_of.values():
            nb.watch.adopt(netconfig_id, port, up=False)
        states: dict[str, bool] = await nb.read(PortStates(nb.api, netconfig_id, list(port_of.values())))
        for port, up in states.items():
            nb.watch.adopt(netconfig_id, port, up=up)
        absent = [p for p in port_of.values() if p not in states]
        nb.watch.forget(p for p in absent if (t := nb.watch.times(p)) is not None and not t.ours)
        present = [p for p in port_of.values() if p in states]
        await nb.watch.wait(present, max(0.0, timeout - (time.monotonic() - started)))
        late = [p for p in present if (t := nb.watch.times(p)) is not None and t.up is None]
        if late:  # a safety net: the replica says up where no event did (none should be missed)
            again: dict[str, bool] = await nb.read(PortStates(nb.api, netconfig_id, late))
            for port in late:
                if again.get(port):
                    nb.watch.seen_up(port)
        answers: dict[str, tuple[bool, float]] = {}
        for port in present:
            times = nb.watch.times(port)
            if times is not None and times.up is not None:
                answers[port] = (True, times.seconds)
        chassis = await self._chassis(remotes.sb, list(answers))
        return [
            PortUp(vm_id, *answers.get(port, (False, 0.0)), chassis=chassis.get(port, ""))
            for vm_id, port in port_of.items()
        ]

    async def _chassis(self, sb_remote: str, port_names: list[str]) -> dict[str, str]:
        """The chassis of these ports, when the SB answers ({} otherwise: the chassis is then unknown)."""
        if not sb_remote or not port_names:
            return {}
        if time.monotonic() - self._sb_failed.get(sb_remote, -SB_RETRY_SECONDS) < SB_RETRY_SECONDS:
            return {}
        try:
            sb = self._sb.get(sb_remote)
            if sb is None:
                async with self._opening.setdefault(f"sb:{sb_remote}", asyncio.Lock()):
                    sb = self._sb.get(sb_remote) or await SbClient.open(sb_remote, self.timeout)
                    self._sb[sb_remote] = sb
            return await sb.chassis(port_names)
        except MerakError as exc:
            self._sb_failed[sb_remote] = time.monotonic()
            log.warning("ovn_sb_unavailable", remote=sb_remote, error=str(exc))
            return {}

    async def _client(self, remote: str) -> NbClient:
        """The connection to an NB, made on first use (the service starts without OVN)."""
        client = self._nb.get(remote)
        if client is not None:
            return client
        async with self._opening.setdefault(f"nb:{remote}", asyncio.Lock()):
            client = self._nb.get(remote)
            if client is None:
                watch = PortWatch(asyncio.get_running_loop(), self.metrics.port_up_seconds)
                client = await NbClient.open(remote, watch, self.timeout)
                self._nb[remote] = client
        return client

    async def close(self) -> None:
        """Stop every database connection."""
        clients: list[NbClient | SbClient] = [*self._nb.values(), *self._sb.values()]
        self._nb.clear()
        self._sb.clear()
        for client in clients:
            await client.close()


def _remotes(state: NetworkState) -> OvnRemotes:
    if state.ovn is None:
        raise FailedPrecondition(f"network config {state.netconfig_id!r} names no OVN database")
    return state.ovn


def _network_commands(api: Any, state: NetworkState, current: NetworkState | None) -> list[Any]:
    """What `state` holds beyond `current`: routers, switches with their router ports, port groups with
    their ACLs (and, on CREATE, the config's drop group)."""
    netconfig_id = state.netconfig_id
    commands: list[Any] = []
    had = {vpc.id: {s.id for s in vpc.subnets} for vpc in current.vpcs} if current else {}
    for vpc in state.vpcs:
        router: Any = names.router(netconfig_id, vpc.id)
        if vpc.id not in had:
            router = api.lr_add(
                router, may_exist=True, external_ids=names.owned(netconfig_id, **{names.VPC: vpc.id})
            )
            commands.append(router)
        for subnet in vpc.subnets:
            if subnet.id in had.get(vpc.id, ()):
                continue
            owned = names.owned(netconfig_id, **{names.VPC: vpc.id, names.SUBNET: subnet.id})
            router_port = names.router_port(netconfig_id, subnet.id)
            switch = api.ls_add(names.switch(netconfig_id, subnet.id), may_exist=True, external_ids=owned)
            commands += [
                switch,
                api.lrp_add(
                    router, router_port, names.router_mac(netconfig_id, subnet.slot),
                    [f"{subnet.gateway}/{subnet.prefix_len}"], may_exist=True, external_ids=owned,
                ),
                api.lsp_add(
                    switch, names.switch_router_port(netconfig_id, subnet.id), may_exist=True, type="router",
                    addresses=["router"], options={"router-port": router_port}, external_ids=owned,
                ),
            ]  # fmt: skip
    if current is None:
        commands += _port_group(
            api, names.drop_group(netconfig_id), names.owned(netconfig_id), drop_acls(netconfig_id)
        )
    had_groups = {g.id for g in current.security_groups} if current else set()
    for group in state.security_groups:
        if group.id not in had_groups:
            owned = names.owned(netconfig_id, **{names.GROUP: group.id})
            pg = names.port_group(netconfig_id, group.id)
            commands += _port_group(api, pg, owned, group_acls(netconfig_id, group))
    return commands


def _port_group(api: Any, name: str, owned: dict[str, str], acls: list[Acl]) -> list[Any]:
    group = api.pg_add(name, may_exist=True, acls=[], ports=[], external_ids=owned)
    return [group] + [
        api.pg_acl_add(group, a.direction, a.priority, a.match, a.action, may_exist=True, **a.external_ids)
        for a in acls
    ]


def _delete_command(api: Any, state: NetworkState, keep: NetworkState | None) -> DeleteOwned:
    """Everything of the config, or what `state` holds beyond `keep` (an UPDATE undone)."""
    netconfig_id = state.netconfig_id
    if keep is None:
        return DeleteOwned(api, netconfig_id)
    kept = {vpc.id: {s.id for s in vpc.subnets} for vpc in keep.vpcs}
    rows: set[str] = set()
    router_ports: list[str] = []
    for vpc in state.vpcs:
        if vpc.id not in kept:
            rows.add(names.router(netconfig_id, vpc.id))
        for subnet in vpc.subnets:
            if subnet.id not in kept.get(vpc.id, ()):
                rows.add(names.switch(netconfig_id, subnet.id))
                if vpc.id in kept:
                    router_ports.append(names.router_port(netconfig_id, subnet.id))
    kept_groups = {g.id for g in keep.security_groups}
    rows |= {names.port_group(netconfig_id, g.id) for g in state.security_groups if g.id not in kept_groups}
    return DeleteOwned(api, netconfig_id, rows, router_ports)
