"""Impairments of one network device of a lab, in the namespace that holds it (local backend).

What this kernel offers decides how (checked on the 6.18 kernel of the development machine):
- down / up: the device's carrier (netlink);
- rate: a `tbf` qdisc on the device's egress (pyroute2);
- loss: an nf_tables rule dropping that share of what leaves the device (`numgen random`), in an
  `inet` table (routed and local traffic: a vhost's NIC) and a `bridge` table (a switch's ports);
  the `netdev` egress hook is not used: its drops did not take effect on veth here;
- partition: the same tables dropping what leaves the device for a set of addresses;
- delay and jitter: `netem`, where the kernel has it; elsewhere FailedPrecondition naming it.

Every setting of a device is rewritten whole (the namespace's nf_tables tables are replaced in one
transaction), and `clear` removes everything this module added; names are checked, and `nft`
reads its rules on stdin, never through a shell.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from merak import kernel, netns
from merak.errors import FailedPrecondition, InvalidArgument

TABLE = "merak_impair"
IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
MAX_RATE_BPS = 100_000_000_000
MAX_DELAY_MS = 60_000
TC_H_ROOT = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class DeviceFaults:
    """What one device suffers; the defaults are "nothing"."""

    down: bool = False
    rate_bps: int = 0  # 0: no limit
    loss_percent: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    blocked: tuple[str, ...] = ()  # destination addresses dropped (a partition)

    def check(self, field_prefix: str = "") -> None:
        """InvalidArgument naming the first value out of range."""
        if not 0 <= self.rate_bps <= MAX_RATE_BPS:
            raise InvalidArgument(f"{field_prefix}rate_bps", f"must be 0 (none) to {MAX_RATE_BPS}")
        if not 0 <= self.loss_percent <= 100:
            raise InvalidArgument(f"{field_prefix}loss_percent", "must be between 0 and 100")
        for name, value in (("delay_ms", self.delay_ms), ("jitter_ms", self.jitter_ms)):
            if not 0 <= value <= MAX_DELAY_MS:
                raise InvalidArgument(f"{field_prefix}{name}", f"must be between 0 and {MAX_DELAY_MS}")
        if self.delay_ms and self.rate_bps:
            raise InvalidArgument(f"{field_prefix}rate_bps", "a rate limit with a delay is not built yet")
        if self.jitter_ms and not self.delay_ms:
            raise InvalidArgument(f"{field_prefix}jitter_ms", "needs a delay_ms")
        for i, address in enumerate(self.blocked):
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise InvalidArgument(
                    f"{field_prefix}blocked[{i}]", f"{address!r} is not an IPv4 address"
                ) from None


@dataclass
class NamespaceFaults:
    """Every impaired device of one namespace (what `apply` makes the kernel hold)."""

    devices: dict[str, DeviceFaults] = field(default_factory=dict)


def check_ifname(name: str, field_name: str = "device") -> str:
    """A device name the kernel could hold, else InvalidArgument."""
    if not IFNAME.match(name):
        raise InvalidArgument(field_name, f"{name!r} is not a network device name")
    return name


def nft_script(devices: Mapping[str, DeviceFaults]) -> str:
    """The rules of a namespace's faults: both tables, replaced whole in one `nft -f` transaction."""
    rules: list[str] = []
    for name, faults in sorted(devices.items()):
        check_ifname(name)
        if faults.blocked:
            addresses = ", ".join(str(ipaddress.IPv4Address(a)) for a in faults.blocked)
            rules.append(f'oifname "{name}" ip daddr {{ {addresses} }} drop')
        if faults.loss_percent:
            share = round(faults.loss_percent * 100)  # in 1/10,000
            rules.append(f'oifname "{name}" numgen random mod 10000 < {share} drop')
    lines = []
    for family, hooks in (("inet", ("output", "forward")), ("bridge", ("output", "forward"))):
        # "add" then "delete" makes the delete safe when the table does not exist yet.
        lines += [f"add table {family} {TABLE}", f"delete table {family} {TABLE}"]
        if not rules:
            continue
        lines.append(f"table {family} {TABLE} {{")
        for hook in hooks:
            lines.append(f"  chain {hook} {{ type filter hook {hook} priority 0; policy accept;")
            lines += [f"    {rule}" for rule in rules]
            lines.append("  }")
        lines.append("}")
    return "\n".join(lines) + "\n"


def _nft(ns: str, script: str) -> None:
    done = subprocess.run(
        ["nsenter", f"--net={netns.path_of(ns)}", "nft", "-f", "-"],
        input=script.encode(),
        capture_output=True,
        check=False,
    )
    if done.returncode:
        raise FailedPrecondition(f"nftables in {ns}: {done.stderr.decode(errors='replace').strip()[:300]}")


def apply(ns: str, devices: Mapping[str, DeviceFaults]) -> None:
    """Make the devices of namespace `ns` suffer exactly `devices` (a device left out is healed)."""
    for name, faults in devices.items():
        check_ifname(name)
        faults.check(f"devices[{name}].")

    def in_namespace() -> None:
        with IPRoute(groups=0) as ipr:
            for name, faults in devices.items():
                found = ipr.link_lookup(ifname=name)
                if not found:
                    raise InvalidArgument("device", f"{name!r} is not a device of {ns}")
                index = found[0]
                ipr.link("set", index=index, state="down" if faults.down else "up")
                _set_qdisc(ipr, index, faults)

    netns.run_in(ns, in_namespace)
    _nft(ns, nft_script({n: f for n, f in devices.items() if f.loss_percent or f.blocked}))


def _set_qdisc(ipr: IPRoute, index: int, faults: DeviceFaults) -> None:
    with contextlib.suppress(NetlinkError):  # none to remove
        ipr.tc("del", index=index, parent=TC_H_ROOT)  # the root qdisc, back to the default
    if faults.delay_ms:
        try:
            options = {"delay": int(faults.delay_ms * 1000)}
            if faults.jitter_ms:
                options["jitter"] = int(faults.jitter_ms * 1000)
            ipr.tc("add", "netem", index, **options)
        except NetlinkError as exc:
            raise FailedPrecondition(
                f"delay needs the kernel's netem qdisc (sch_netem), which this kernel lacks: {exc}"
            ) from None
    elif faults.rate_bps:
        burst = max(16 * 1024, faults.rate_bps // 400)  # bytes: 20 ms at the rate, 16 KiB at least
        ipr.tc("add", "tbf", index, rate=f"{faults.rate_bps}bit", burst=burst, latency="100ms")


def clear(ns: str, names: Sequence[str]) -> None:
    """Heal the devices `names` of `ns` and remove the namespace's impairment tables."""
    apply(ns, dict.fromkeys(names, DeviceFaults()))


def netem_available() -> bool:
    """Whether this kernel has netem (delay, jitter), probed as `merak doctor` probes it."""
    return kernel.kernel_has("netem")
