"""What a real lab costs this machine: the model `merak doctor` checks before a lab is made and
compute checks before it creates real VMs (RESOURCE_EXHAUSTED, before anything is created).

The constants come from `python -m bench compute` on a 2-vCPU, 24 GiB machine (kernel 6.18),
/proc/meminfo sampled while its real runs went: 100 vhosts x 100 VMs in one VPC took 4,309 MiB of
kernel memory (slab and per-cpu) at its peak, 200 x 100 took 10,551 MiB. A real VM costs the
kernel its namespace, veth pair, bridge port, address and route (~343 KiB), and every other real
vhost of its VPC holds three overlay entries for it, a neighbour entry and two FDB entries
(~1,013 bytes): that part grows with the vhosts a VPC spans. The 16 agents grew by 1.2-1.4 GiB.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

GIB = 1 << 30
STACK_BYTES = 1 * GIB  # Redis, the Temporal dev server and the services, measured ~0.9 GiB
# The local backend runs at most this many agent processes for a lab (each serves some vhosts).
MAX_AGENTS = 16
AGENT_BYTES = 96 << 20  # one agent process (RSS with 200 vhosts x 100 VMs over 16 agents: ~90 MiB)
REAL_VM_BYTES = 360 << 10  # one VM's kernel objects (343 KiB measured) and its agent's record of it
OVERLAY_ENTRY_BYTES = 1 << 10  # one VM's neighbour and FDB entries on one other vhost (1,013 B measured)
# A routed overlay: one other vhost's neighbour, FDB entry and routes on one vhost (~1.2 KiB measured with
# two blocks, docs/routed-overlay.md), with room for a borrowed /32 or two.
ROUTED_PEER_BYTES = 1536
# An OVN chassis in an emulated host (ovn-notes.md): ovsdb-server + ovs-vswitchd + ovn-controller, ~35 MiB
# real (whatever its VMs), 32 MiB for a dummy one with no port, growing ~70 KiB per bound port.
CHASSIS_BYTES = 40 << 20
CHASSIS_PORT_BYTES = 72 << 10
# Memory a deploy leaves free: the machine keeps working (and the stack keeps its own headroom).
RESERVE_FRACTION = 0.10
MIN_RESERVE_BYTES = 512 << 20
NETNS_LIMIT = Path("/proc/sys/user/max_net_namespaces")
NETNS_DIR = Path("/run/netns")


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes ({} when it cannot be read)."""
    values = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return values


def chassis_bytes(chassis: int, ports: int) -> int:
    """Memory of `chassis` OVN chassis binding `ports` ports between them."""
    return chassis * CHASSIS_BYTES + ports * CHASSIS_PORT_BYTES


def real_vms_bytes(vms: int, vhosts: int, *, routed: bool = False) -> int:
    """Kernel memory of `vms` real VMs of one VPC spread over `vhosts` real vhosts: each VM's, and the
    overlay's: a VM's entries on every other vhost, or with a routed overlay (per-host address blocks) an
    entry set per other vhost on each vhost, whatever the VMs' number."""
    if routed:
        return vms * REAL_VM_BYTES + vhosts * max(0, vhosts - 1) * ROUTED_PEER_BYTES
    return vms * (REAL_VM_BYTES + max(0, vhosts - 1) * OVERLAY_ENTRY_BYTES)


@dataclass(frozen=True, slots=True)
class MachineRoom:
    """What this machine can still take: memory a deploy may use, and network namespaces."""

    memory_bytes: int
    namespaces: int

    @classmethod
    def now(cls) -> MachineRoom | None:
        """The room left now (None when /proc cannot tell)."""
        info = meminfo()
        available, total = info.get("MemAvailable"), info.get("MemTotal")
        if available is None or total is None:
            return None
        reserve = max(MIN_RESERVE_BYTES, int(total * RESERVE_FRACTION))
        try:
            limit = int(NETNS_LIMIT.read_text())
        except (OSError, ValueError):
            limit = 1 << 31
        try:
            existing = len(os.listdir(NETNS_DIR))
        except OSError:
            existing = 0
        return cls(memory_bytes=max(0, available - reserve), namespaces=max(0, limit - existing))
