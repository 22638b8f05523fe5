"""The OVN chassis of the vhosts this agent serves (one per vhost, started by EnsureChassis), and the VM
ports plugged into them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from merak import netns, ovs
from merak.controlplane import ControlPlaneAllow
from merak.errors import FailedPrecondition, InvalidArgument, Unavailable
from merak.logs import get_logger
from merak.v1 import agent_pb2
from services.agent.ovn.chassis import ENCAP_TYPES, Chassis, ChassisSpec
from services.agent.vhosts import Vhost, VhostSet

__all__ = ["Chassis", "ChassisSet", "ChassisSpec"]

log = get_logger(__name__)


def _dummy_encap_ip(index: int) -> str:
    """An encapsulation address for a chassis without a data plane (never carries a packet)."""
    return f"127.{64 + index // 65536 % 64}.{index // 256 % 256}.{index % 256}"


def _southbound_check(remote: str, spec: ChassisSpec) -> None:
    """A unix-socket SB must answer as an OVN southbound database before a chassis is pointed at it
    (else ovn-controller would wait for it until the start times out): FAILED_PRECONDITION when nothing
    listens there, UNAVAILABLE when it does not answer in time, INVALID_ARGUMENT when something else
    does (naming its error by kind; the server's text goes to our log only). And it must not list a live
    chassis of this name from another lab (system-id = the vhost's name: two labs' vhost-1 on one
    central would take the same chassis record in turns): FAILED_PRECONDITION. A chassis whose owner
    (SB's `hostname`: a namespace or a directory) is gone is stale, and its record is taken over. A tcp:
    or ssl: remote is reached from the chassis's namespace, not this one: left to ovn-controller."""
    if not remote.startswith("unix:"):
        return
    try:
        rows = ovs.select_rows(remote, "OVN_Southbound", "Chassis", ("name", "hostname"), timeout=3.0)
    except (FileNotFoundError, ConnectionRefusedError):
        raise FailedPrecondition(f"sb_remote: nothing listens at {remote[:200]}") from None
    except OSError as exc:
        raise Unavailable(f"sb_remote: {remote[:200]} does not answer ({exc.__class__.__name__})") from None
    except ValueError as exc:
        kind = exc.kind if isinstance(exc, ovs.OvsdbError) else type(exc).__name__
        log.warning("chassis_sb_error_reply", remote=remote, kind=kind, error=str(exc)[:200])
        raise InvalidArgument(
            "sb_remote",
            f"{remote[:200]} is not an OVN southbound database (reading its Chassis table: {kind})",
        ) from None
    for row in rows:
        owner = str(row.get("hostname") or "")
        if row.get("name") == spec.system_id and owner and owner != spec.owner and _alive(owner):
            raise FailedPrecondition(
                f"chassis {spec.system_id}: the southbound database {remote[:200]} already has a chassis of "
                f"that name from another lab ({owner[:200]}); one OVN central serves one lab's vhost names "
                "at a time: delete that lab, or give this one an OVN of its own (ovn_nb / ovn_sb)"
            )


def _check_unless_running(chassis: Chassis, remote: str) -> None:
    """_southbound_check for a chassis about to start or to change its SB; one running on `remote`
    answers at once (compute asks once per batch), as it did before the check."""
    if chassis.sb_remote != remote or not chassis.running():
        _southbound_check(remote, chassis.spec)


def _alive(owner: str) -> bool:
    """The owner of a chassis record still exists: its namespace, or its directory."""
    return Path(owner).exists() if owner.startswith("/") else netns.exists(owner)


class ChassisSet:
    """The chassis of this agent's vhosts under `root/<vhost index>`; a chassis an earlier agent of the
    same vhosts started (this one was restarted) is adopted, not started twice."""

    def __init__(
        self, vhosts: VhostSet, root: Path, *, dummy: bool, control_plane: ControlPlaneAllow | None = None
    ) -> None:
        self.vhosts = vhosts
        self.root = root
        self.dummy = dummy
        # The southbound databases a request may name (MERAK_CONTROL_PLANE_ALLOW; none by default): its
        # ovn-controller would connect wherever sb_remote says, any socket or port of the machine.
        self.control_plane = control_plane or ControlPlaneAllow()
        self._chassis: dict[str, Chassis] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def spec(self, vhost: Vhost) -> ChassisSpec:
        """What the chassis of `vhost` is made of."""
        dummy = self.dummy or not vhost.netns
        if not dummy and not (vhost.datapath_ip and vhost.nic):
            raise FailedPrecondition(f"vhost {vhost.name} has no data-plane address for a chassis")
        return ChassisSpec(
            system_id=vhost.name,
            netns="" if dummy else vhost.netns,
            root=self.root / str(vhost.index),
            encap_ip=_dummy_encap_ip(vhost.index) if dummy else vhost.datapath_ip,
            nic="" if dummy else vhost.nic,
            prefix_len=vhost.prefix_len,
            dummy=dummy,
        )

    def _of(self, vhost: Vhost) -> Chassis:
        chassis = self._chassis.get(vhost.name)
        if chassis is None:
            chassis = self._chassis[vhost.name] = Chassis(self.spec(vhost))
        return chassis

    def running(self, vhost: Vhost) -> Chassis | None:
        """The vhost's chassis when it runs (started by this agent or an earlier one)."""
        chassis = self._of(vhost)
        return chassis if chassis.running() else None

    async def ensure(
        self, request: agent_pb2.EnsureChassisRequest, vhost: Vhost
    ) -> agent_pb2.EnsureChassisReply:
        """EnsureChassis: checked (the SB an allowed one, that answers as an SB), then started (or found
        running) off the event loop."""
        missing = ovs.missing()
        if missing:
            raise FailedPrecondition(f"OVN/OVS is not installed here: missing {', '.join(missing)}")
        chassis = self._of(vhost)
        remote = request.sb_remote or await asyncio.to_thread(chassis.configured_remote)
        if not remote:
            raise InvalidArgument("sb_remote", f"required: vhost {vhost.name} has not been a chassis yet")
        self.control_plane.check_ovsdb("sb_remote", remote)
        encap = request.encap_type or "geneve"
        if encap not in ENCAP_TYPES:
            raise InvalidArgument("encap_type", f"{encap!r} is not one of {', '.join(ENCAP_TYPES)}")
        await asyncio.to_thread(_check_unless_running, chassis, remote)
        started_at = time.perf_counter()
        async with self._locks.setdefault(vhost.name, asyncio.Lock()):
            started = await asyncio.to_thread(chassis.ensure, remote, encap)
        return agent_pb2.EnsureChassisReply(
            system_id=chassis.spec.system_id,
            started=started,
            seconds=time.perf_counter() - started_at,
            encap_ip=chassis.spec.encap_ip,
        )

    async def plug(self, vhost: Vhost, ports: Sequence[tuple[str, str]]) -> None:
        """Plug (interface, logical switch port) pairs into the vhost's br-int (none: nothing to do)."""
        if not ports:
            return
        chassis = self.running(vhost)
        if chassis is None:
            raise FailedPrecondition(f"vhost {vhost.name} is not an OVN chassis: call EnsureChassis first")
        await asyncio.to_thread(chassis.add_ports, ports)

    async def unplug(self, vhost: Vhost, ifnames: Sequence[str]) -> None:
        """Unplug interfaces from the vhost's br-int, when it is a chassis."""
        if not ifnames or not (self.root / str(vhost.index)).exists():
            return
        chassis = self.running(vhost)
        if chassis is not None:
            await asyncio.to_thread(chassis.del_ports, ifnames)

    async def close(self) -> None:
        """Stop every chassis of this agent's vhosts (and remove their files)."""
        for vhost in self.vhosts.vhosts.values():
            if (self.root / str(vhost.index)).exists():
                await asyncio.to_thread(self._of(vhost).stop)
