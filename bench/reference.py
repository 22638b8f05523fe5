"""The kernel work of a real lab done by iproute2 alone: the yardstick for the product's VM rate.

A lab of `hosts` x `per_host` VMs in one VPC, built the way the agents build it, by `ip` and `bridge`
in batch mode: per host a VPC namespace (bridge, VXLAN device on it with ARP suppression); per VM a
namespace and a veth pair born in place (one end on the bridge, eth0 in the VM with its MAC), lo
and eth0 up, address and default route; then the overlay: in every VPC namespace a permanent
neighbour entry for every VM of the lab, and two FDB entries (remote VTEP, static on the VXLAN
port) for every VM of the other hosts. The same kernel objects as the product's, at the same
count, so the ratio measures the product's overhead and not how the kernel scales.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from merak import netns

VNI = 4243


@dataclass(frozen=True, slots=True)
class ReferenceTimes:
    """Seconds iproute2 took: the VMs (namespaces, links, addresses) and the overlay entries."""

    vms: float
    overlay: float

    @property
    def total(self) -> float:
        return self.vms + self.overlay


def _mac(host: int, vm: int) -> str:
    return f"02:bf:{host >> 8 & 255:02x}:{host & 255:02x}:{vm >> 8 & 255:02x}:{vm & 255:02x}"


def _ip(host: int, vm: int) -> str:
    n = host * 1000 + vm + 2
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def _vtep(host: int) -> str:
    return f"192.168.{host >> 8 & 255}.{(host & 255) + 1}"


def _ip_batch(lines: list[str], *namespace: str, tool: str = "ip") -> None:
    # nsenter only joins the network namespace; `ip -n` also unshares a mount namespace and mounts
    # sysfs in it, which copies every mount: 130 ms a call once 10,000 namespaces are mounted.
    enter = ["nsenter", f"--net={netns.path_of(namespace[0])}"] if namespace else []
    subprocess.run([*enter, tool, "-batch", "-"], input="\n".join(lines).encode() + b"\n", check=True)


def lab_reference(hosts: int, per_host: int, prefix: str) -> ReferenceTimes:
    """Build the lab with iproute2 and time it; every namespace it made is removed before returning."""
    vpcs = [f"{prefix}v{h}" for h in range(hosts)]
    vms = [[f"{prefix}m{h}-{v}" for v in range(per_host)] for h in range(hosts)]
    try:
        start = time.perf_counter()
        # One root batch per host: `ip` keeps a descriptor open per namespace a batch names.
        for h in range(hosts):
            root = [f"netns add {vpcs[h]}", *(f"netns add {name}" for name in vms[h])]
            root += [
                f"link add t{v} netns {vpcs[h]} type veth peer name eth0 netns {vms[h][v]}"
                for v in range(per_host)
            ]
            _ip_batch(root)
        for h, vpc in enumerate(vpcs):
            script = [
                "link set lo up",
                "link add br0 type bridge",
                "link set br0 up",
                f"link add vx type vxlan id {VNI} local {_vtep(h)} dstport 4789 nolearning",
                "link set vx master br0 up",
                "link set dev vx type bridge_slave neigh_suppress on",
            ]
            script += [f"link set t{v} master br0 up" for v in range(per_host)]
            _ip_batch(script, vpc)
        for h in range(hosts):
            for v, name in enumerate(vms[h]):
                _ip_batch(
                    [
                        "link set lo up",
                        f"link set eth0 address {_mac(h, v)}",
                        f"addr add {_ip(h, v)}/8 dev eth0",
                        "link set eth0 up",
                        "route add default via 10.0.0.1",
                    ],
                    name,
                )
        made = time.perf_counter()
        neighbours = [
            f"neigh replace {_ip(h, v)} lladdr {_mac(h, v)} dev br0 nud permanent"
            for h in range(hosts)
            for v in range(per_host)
        ]
        for h, vpc in enumerate(vpcs):
            _ip_batch(neighbours, vpc)
            fdb: list[str] = []
            for other in range(hosts):
                if other != h:
                    for v in range(per_host):
                        mac = _mac(other, v)
                        fdb += [
                            f"fdb replace {mac} dev vx dst {_vtep(other)} self permanent",
                            f"fdb replace {mac} dev vx master static",
                        ]
            if fdb:
                _ip_batch(fdb, vpc, tool="bridge")
        return ReferenceTimes(vms=made - start, overlay=time.perf_counter() - made)
    finally:
        for name in netns.list_names(prefix):
            netns.remove(name)


def cpu_idle_fraction(seconds: float) -> float:
    """The machine's idle share over `seconds`."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(timeout: float = 300.0, idle: float = 0.9) -> float:
    """Wait until the machine is idle (the kernel frees removed namespaces in the background, for
    minutes after 10,000 of them): a measurement started earlier pays for the previous one.
    Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout and cpu_idle_fraction(1.0) < idle:
        pass
    return time.monotonic() - start


def prefix_for(tag: str) -> str:
    """A namespace prefix of this process."""
    return f"{tag}{os.getpid() % 100000}"
