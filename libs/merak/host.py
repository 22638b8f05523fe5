"""The machine-wide kernel settings a lab needs: sized from the lab, raised (never lowered), logged.

A lab of real VMs lives in network namespaces that share some kernel-wide tables. The one that
breaks first is the neighbour (ARP) table: its thresholds `net.ipv4.neigh.default.gc_thresh1/2/3`
are global to the machine, the kernel defaults (128/512/1024) overflow at ~800 VMs talking to one
another, and an overflowing table drops pings silently (`neighbour: arp_cache: neighbor table
overflow!` in the kernel log). Those sysctls are visible only from the machine's first network
namespace, so a `HostTuner` remembers the namespace it was built in and writes from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from merak import netns
from merak.logs import get_logger

log = get_logger(__name__)

PROC_SYS = Path("/proc/sys")
LOCK_FILE = Path("/run/lock/merak-host.lock")

NEIGH_THRESH = tuple(f"net.ipv4.neigh.default.gc_thresh{k}" for k in (1, 2, 3))
NETNS_LIMIT = "user.max_net_namespaces"
PID_MAX = "kernel.pid_max"
# The kernel defaults, which CI puts back before it tests.
NEIGH_DEFAULTS = (128, 512, 1024)
# gc_thresh3 is a cap, not a reservation (entries cost memory only once they exist, ~0.5 KB
# each); 2^20 entries are enough for every VM of a 10,000-VM lab to talk to ~100 others.
NEIGH_CAP = 1 << 20
# The stack, and 16 agents per lab with their threads, with room for several labs.
PIDS_NEEDED = 4096
# Redis serves 10,000 clients by default and needs 32 descriptors more; every service and agent
# raises its own soft limit to this (children inherit it).
OPEN_FILES_NEEDED = 16_384

# What a value that is too low breaks, for logs and `merak doctor`.
EFFECTS: dict[str, str] = {
    NEIGH_THRESH[0]: "no neighbour GC below this",
    NEIGH_THRESH[1]: "neighbour GC every 5 s above this",
    NEIGH_THRESH[2]: "neighbour table limit: past it pings fail",
    NETNS_LIMIT: "one per VM, vhost, switch, VPC",
    PID_MAX: "threads of the stack and agents",
}


def pow2ceil(value: int) -> int:
    """The smallest power of two >= value (1 for value <= 1)."""
    return 1 << max(0, value - 1).bit_length()


def lab_namespaces(vhosts: int, vms: int, vpcs: int = 1) -> int:
    """An upper bound of the namespaces a lab makes: VMs, vhosts, a VPC namespace per vhost and VPC,
    and a switch per vhost at most (LINEAR), plus a core."""
    return vms + vhosts * (2 + vpcs) + 1


def needed_values(namespaces: int) -> dict[str, int]:
    """The sysctl values a machine holding `namespaces` network namespaces needs.

    Every VM may hold a neighbour entry for every other namespace (ping-all), so the hard limit is
    twice N² rounded up to a power of two (between the kernel default and NEIGH_CAP); the other
    two thresholds keep the kernel's 1:4:8 ratio.
    """
    n = max(0, namespaces)
    thresh3 = min(NEIGH_CAP, max(NEIGH_DEFAULTS[2], pow2ceil(2 * n * n)))
    return {
        NEIGH_THRESH[0]: thresh3 // 8,
        NEIGH_THRESH[1]: thresh3 // 2,
        NEIGH_THRESH[2]: thresh3,
        NETNS_LIMIT: pow2ceil(2 * n) if n else 0,
        PID_MAX: PIDS_NEEDED,
    }


@dataclass(frozen=True, slots=True)
class Change:
    """A setting this process raised."""

    name: str
    before: int
    after: int

    def __str__(self) -> str:
        return f"{self.name} {self.before} -> {self.after}"


@dataclass(frozen=True, slots=True)
class Shortfall:
    """A setting below what the lab needs that could not be raised here; `reason` says why."""

    name: str
    current: int | None
    needed: int
    reason: str

    def __str__(self) -> str:
        have = "missing" if self.current is None else str(self.current)
        return f"{self.name} is {have}, needs {self.needed}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Sizing:
    """The outcome of one `HostTuner.ensure`."""

    changes: tuple[Change, ...] = ()
    shortfalls: tuple[Shortfall, ...] = ()


def sysctl_path(name: str, root: Path = PROC_SYS) -> Path:
    """/proc/sys/<name with dots as slashes>."""
    return root / name.replace(".", "/")


def read_sysctl(name: str, root: Path = PROC_SYS) -> int | None:
    """The integer value of sysctl `name`, None when this namespace does not show it."""
    try:
        return int(sysctl_path(name, root).read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def writable(name: str, root: Path = PROC_SYS) -> bool:
    """True when this process may write sysctl `name`."""
    return os.access(sysctl_path(name, root), os.W_OK)


@contextlib.contextmanager
def _host_lock(path: Path) -> Iterator[None]:
    """Serialize read-compare-write between processes, so two agents never lower what a third raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        yield  # not root: nothing here can write sysctls anyway
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def raise_sysctls(wanted: Mapping[str, int], *, root: Path = PROC_SYS, lock_file: Path = LOCK_FILE) -> Sizing:
    """Raise each sysctl of `wanted` that is lower to its value; never lower one."""
    changes: list[Change] = []
    shortfalls: list[Shortfall] = []
    with _host_lock(lock_file):
        for name, value in wanted.items():
            current = read_sysctl(name, root)
            if current is not None and current >= value:
                continue
            if current is None:
                shortfalls.append(Shortfall(name, None, value, "not visible in this network namespace"))
                continue
            try:
                sysctl_path(name, root).write_text(f"{value}\n")
            except OSError as exc:
                shortfalls.append(Shortfall(name, current, value, exc.strerror or str(exc)))
                continue
            changes.append(Change(name, current, value))
    return Sizing(tuple(changes), tuple(shortfalls))


RESERVED_PORTS = "net.ipv4.ip_local_reserved_ports"


def parse_port_list(text: str) -> set[int]:
    """The ports of a `ip_local_reserved_ports` value ("8080,40050-40054")."""
    ports: set[int] = set()
    for part in text.replace("\n", "").split(","):
        first, _, last = part.strip().partition("-")
        if first.isdigit():
            ports.update(range(int(first), int(last or first) + 1))
    return ports


def format_port_list(ports: Iterable[int]) -> str:
    """Ports as `ip_local_reserved_ports` takes them, runs as ranges."""
    runs: list[list[int]] = []
    for port in sorted(set(ports)):
        if runs and port == runs[-1][1] + 1:
            runs[-1][1] = port
        else:
            runs.append([port, port])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def reserve_ports(
    ports: Iterable[int], *, root: Path = PROC_SYS, lock_file: Path = LOCK_FILE
) -> tuple[list[int], str]:
    """Keep `ports` out of the kernel's choice of source ports for outgoing connections (added to
    `net.ipv4.ip_local_reserved_ports`, what was there kept): a service listening on a port of the
    ephemeral range otherwise finds it, now and then, taken by some client's connection. Returns the
    ports newly reserved, and why nothing could be ("" when it could)."""
    path = sysctl_path(RESERVED_PORTS, root)
    with _host_lock(lock_file):
        try:
            current = parse_port_list(path.read_text())
        except OSError as exc:
            return [], exc.strerror or str(exc)
        new = sorted(set(ports) - current)
        if not new:
            return [], ""
        try:
            path.write_text(format_port_list(current | set(new)) + "\n")
        except OSError as exc:
            return [], exc.strerror or str(exc)
    return new, ""


def release_ports(
    ports: Iterable[int], *, root: Path = PROC_SYS, lock_file: Path = LOCK_FILE
) -> tuple[list[int], str]:
    """Take `ports` (those `reserve_ports` added) out of `ip_local_reserved_ports` again: the ones
    released, and why none could be ("" when they could)."""
    path = sysctl_path(RESERVED_PORTS, root)
    with _host_lock(lock_file):
        try:
            current = parse_port_list(path.read_text())
            gone = sorted(current & set(ports))
            if gone:
                path.write_text(format_port_list(current - set(gone)) + "\n")
        except OSError as exc:
            return [], exc.strerror or str(exc)
    return gone, ""


class HostTuner:
    """Keeps this machine's kernel settings big enough for the namespaces on it; thread-safe.

    Built in the machine's first network namespace (the only one that shows the neighbour
    thresholds), it writes from there even when its process later moves into a vhost's namespace.
    """

    def __init__(
        self,
        *,
        root: Path = PROC_SYS,
        lock_file: Path = LOCK_FILE,
        netns_dir: Path = netns.NETNS_DIR,
        netns_fd: int | None = None,
    ) -> None:
        """`netns_fd`: a handle of the first namespace that the caller keeps and closes (an agent also
        reaches Alcor from there); without one the tuner opens its own, of the calling thread's."""
        self.root = root
        self.lock_file = lock_file
        self.netns_dir = netns_dir
        self._owns_fd = netns_fd is None
        self._ns_fd = (
            os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC) if netns_fd is None else netns_fd
        )
        self._sized_for = 0
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the namespace handle (when it opened it)."""
        if self._owns_fd and self._ns_fd >= 0:
            os.close(self._ns_fd)
        self._ns_fd = -1

    def __enter__(self) -> HostTuner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def present_namespaces(self) -> int:
        """How many named network namespaces this machine has now."""
        try:
            return len(os.listdir(self.netns_dir))
        except FileNotFoundError:
            return 0

    def ensure(self, namespaces: int, *, reason: str) -> Sizing:
        """Raise what a machine with `namespaces` namespaces needs; cheap when already sized for it."""
        with self._lock:
            if namespaces <= self._sized_for:
                return Sizing()
            with netns.entered_fd(self._ns_fd):
                sizing = raise_sysctls(needed_values(namespaces), root=self.root, lock_file=self.lock_file)
            self._sized_for = namespaces
            for change in sizing.changes:
                log.info(
                    "host_setting_raised",
                    setting=change.name,
                    before=change.before,
                    after=change.after,
                    namespaces=namespaces,
                    reason=reason,
                )
            for short in sizing.shortfalls:
                if short.name not in self._warned:
                    self._warned.add(short.name)
                    log.warning(
                        "host_setting_too_low",
                        setting=short.name,
                        current=short.current,
                        needed=short.needed,
                        why=short.reason,
                        effect=EFFECTS.get(short.name, ""),
                        fix=f"sysctl -w {short.name}={short.needed} on this machine",
                    )
            return sizing

    def ensure_for_new(self, new_namespaces: int, *, reason: str) -> Sizing:
        """`ensure` for the namespaces present now plus `new_namespaces` about to be made."""
        return self.ensure(self.present_namespaces() + max(0, new_namespaces), reason=reason)


def raise_open_files(target: int = OPEN_FILES_NEEDED) -> tuple[int, int] | None:
    """Raise this process's open-file limit towards `target` (the hard limit too, as root).

    Returns (before, after) soft limits when it changed, else None. Children inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return None
    new_hard = hard
    if hard != resource.RLIM_INFINITY and hard < target and os.geteuid() == 0:
        new_hard = min(target, read_sysctl("fs.nr_open") or target)
    new_soft = target if new_hard == resource.RLIM_INFINITY else min(target, new_hard)
    if new_soft <= soft:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, new_hard))
    except (ValueError, OSError):
        return None
    return soft, new_soft
