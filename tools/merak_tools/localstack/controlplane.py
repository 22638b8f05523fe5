"""The control-plane endpoints the local stack's processes may reach (`MERAK_CONTROL_PLANE_ALLOW`)."""

from __future__ import annotations

from merak import ovs
from merak.controlplane import ControlPlaneAllow
from merak.errors import InvalidArgument
from merak_tools.alcor_standin import ALCOR_NODEPORTS
from merak_tools.localstack.settings import StackSettings

# Where the README starts the Alcor stand-in (`python -m merak_tools.alcor_standin --nodeports`).
STANDIN_HOST = "127.0.0.1"


def stack_control_plane(settings: StackSettings) -> str:
    """The stack's allow-list: the Alcor stand-in on loopback at Alcor's NodePorts, the stack's own OVN
    central (its TCP ports and unix sockets), and whatever the operator listed in
    MERAK_CONTROL_PLANE_ALLOW; nothing else."""
    entries = [f"{STANDIN_HOST}:{port}" for port in sorted(set(ALCOR_NODEPORTS.values()))]
    hosts = dict.fromkeys(("127.0.0.1", settings.bind_host))
    entries += [
        f"[{host}]:{settings.ovn_port(kind)}" if ":" in host else f"{host}:{settings.ovn_port(kind)}"
        for host in hosts
        if host not in ("0.0.0.0", "::")
        for kind in ("nb", "sb")
    ]
    central = ovs.Central(settings.ovn_dir)
    for kind in ("nb", "sb"):
        try:  # a state directory whose path a unix: remote cannot hold runs no OVN (ovn_off_reason)
            entries.append(ovs.check_remote("OVN socket", central.remote(kind)))
        except InvalidArgument:
            continue
    if settings.control_plane_allow.strip():
        entries.append(settings.control_plane_allow.strip())
    allowed = ",".join(entries)
    ControlPlaneAllow.parse(allowed)  # the operator's part was checked when the settings were read
    return allowed
