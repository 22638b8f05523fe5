"""An emulated host as a real OVN chassis: its own ovsdb-server, ovs-vswitchd (userspace datapath) and
ovn-controller, run in the host's namespace with their files under one directory (ovn-notes.md).

`real` hosts: the host's data-plane NIC becomes a port of a netdev bridge `br-phy` that takes the
host's address (userspace tunnels need the underlay address on a netdev bridge), geneve between
chassis, and each VM's veth is a port of `br-int`. `dummy` hosts (the fake data plane): ovs-vswitchd
runs with `--enable-dummy=override`, so ports without a kernel device are bound and real OVN does all
its control-plane work with no data plane.

Blocking (processes, files): call from a worker thread. Every program is run with an argument list;
names reach it only after validation.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from merak import netns, ovs
from merak.errors import FailedPrecondition, Unavailable
from merak.logs import get_logger
from merak.procs import pid_from_file

log = get_logger(__name__)

DAEMONS = ("ovsdb-server", "ovs-vswitchd", "ovn-controller")
START_TIMEOUT = 30.0
# ovn-controller 23.03 dies (SIGSEGV, a read at 0x110 in its main thread, in its first recompute) in
# about one start in four on a busy machine, the same chassis up to four times in a row with 2 cores
# busy (cores looked at with gdb; Debian's binary is stripped): started again with a growing pause.
START_ATTEMPTS = 12
# ovn-controller must outlive its first recompute by this much to count as started.
SETTLE_SECONDS = 0.3
STOP_TIMEOUT = 10.0
ENCAP_TYPES = ("geneve", "vxlan")
# Inner MTU of a VM behind geneve on a 1500-byte underlay (58 bytes of headers; OVS sends no
# "fragmentation needed" back, so a bigger MTU stalls bulk TCP).
VM_MTU = 1400


@dataclass(frozen=True, slots=True)
class ChassisSpec:
    """What a chassis is made of: its name, namespace ("" = the agent's), files, encapsulation."""

    system_id: str
    netns: str
    root: Path
    encap_ip: str
    # The host's data-plane NIC and prefix length, moved onto br-phy ("" for a dummy chassis).
    nic: str
    prefix_len: int
    dummy: bool

    @property
    def owner(self) -> str:
        """Whose chassis this is, as its `hostname` in SB says: the host's namespace (unique to its lab),
        or for a chassis without one its directory. Another lab's chassis of the same name is told
        apart by it."""
        return self.netns or str(self.root.absolute())

    @property
    def db_socket(self) -> Path:
        """The chassis database's unix socket."""
        return self.root / "db.sock"

    @property
    def db_remote(self) -> str:
        """The chassis database as a remote for ovs-vsctl."""
        return f"unix:{self.db_socket}"

    def pid_file(self, daemon: str) -> Path:
        """Where `daemon` writes its pid."""
        return self.root / f"{daemon}.pid"

    @property
    def env(self) -> dict[str, str]:
        """Run, log and db directories of the chassis's daemons (ovn-controller finds br-int.mgmt
        under OVS_RUNDIR; its control socket goes under OVN_RUNDIR)."""
        root = str(self.root)
        return {
            "OVS_RUNDIR": root,
            "OVS_LOGDIR": root,
            "OVS_DBDIR": root,
            "OVN_RUNDIR": root,
            "OVN_LOGDIR": root,
        }


class _DiedAtStart(Exception):
    """A daemon ended as it started."""


def read_pid(pid_file: Path, daemon: str) -> int | None:
    """The pid in `pid_file` when that process runs and is `daemon` (a recycled pid is not; a zombie
    counts as stopped: a stopped daemon lingers as one here)."""
    return pid_from_file(pid_file, daemon)


class Chassis:
    """One emulated host's chassis: start (idempotent), ports on br-int, stop."""

    def __init__(self, spec: ChassisSpec) -> None:
        self.spec = spec
        self.sb_remote = ""
        self._children: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------------ processes

    def running(self) -> bool:
        """Every daemon of the chassis runs."""
        return all(read_pid(self.spec.pid_file(d), d) is not None for d in DAEMONS)

    def ensure(self, sb_remote: str, encap_type: str = "geneve") -> bool:
        """Start what does not run and point it at `sb_remote`; True when this call started something.
        Returns once ovn-controller is connected to the southbound database and br-int exists."""
        if encap_type not in ENCAP_TYPES:
            raise ValueError(f"encap_type: {encap_type!r} is not one of {', '.join(ENCAP_TYPES)}")
        ovs.check_remote("sb_remote", sb_remote)
        started = False
        self.spec.root.mkdir(parents=True, exist_ok=True)
        ovs.create_db(self.spec.root / "conf.db", "vswitch")
        if read_pid(self.spec.pid_file("ovsdb-server"), "ovsdb-server") is None:
            self._spawn(
                "ovsdb-server",
                str(self.spec.root / "conf.db"),
                f"--remote=punix:{self.spec.db_socket}",
            )
            self._wait(lambda: self._vsctl_ok("--no-wait", "show"), "ovsdb-server answers")
            started = True
        self.vsctl(
            "--no-wait", "--", "init", "--", "set", "Open_vSwitch", ".",
            f"external_ids:system-id={self.spec.system_id}",
            f"external_ids:hostname={self.spec.owner}",
            f"external_ids:ovn-remote={sb_remote}",
            f"external_ids:ovn-encap-type={encap_type}",
            f"external_ids:ovn-encap-ip={self.spec.encap_ip}",
            "external_ids:ovn-bridge-datapath-type=netdev",
        )  # fmt: skip
        if read_pid(self.spec.pid_file("ovs-vswitchd"), "ovs-vswitchd") is None:
            extra = ["--enable-dummy=override"] if self.spec.dummy else []
            self._spawn("ovs-vswitchd", self.spec.db_remote, *extra)
            started = True
        if not self.spec.dummy:
            self._underlay_on_br_phy()
        self.sb_remote = sb_remote
        self._describe(sb_remote)
        started = self._controller_ready(sb_remote) or started
        if started:
            log.info(
                "chassis_started",
                chassis=self.spec.system_id,
                netns=self.spec.netns,
                encap_ip=self.spec.encap_ip,
                dummy=self.spec.dummy,
            )
        return started

    def _describe(self, sb_remote: str) -> None:
        """`chassis.json`: the chassis's name and southbound database, for whoever watches the lab (the
        topology service counts the chassis the southbound database lists)."""
        path = self.spec.root / ovs.CHASSIS_FILE
        text = json.dumps({"system_id": self.spec.system_id, "sb_remote": sb_remote})
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                return
        partial = path.with_name(path.name + ".new")
        partial.write_text(text)
        os.replace(partial, path)

    def _controller_ready(self, sb_remote: str) -> bool:
        """ovn-controller running, connected to the southbound database, br-int made, and alive a
        moment later (its crash in its first recompute comes then): started again while it is not.
        True when it was started."""
        started = False
        for attempt in range(1, START_ATTEMPTS + 1):
            fresh = self._controller_pid() is None
            if fresh:
                self._spawn("ovn-controller", self.spec.db_remote)
                started = True
            self._wait(
                lambda: (
                    self._controller_pid() is None
                    or (self._connected() and self._vsctl_ok("br-exists", "br-int"))
                ),
                f"ovn-controller connected to {sb_remote}",
            )
            deadline = time.monotonic() + (SETTLE_SECONDS if fresh else 0.0)  # one running: as it is
            while self._controller_pid() is not None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self._controller_pid() is not None:
                return started
            log.warning("chassis_controller_died", chassis=self.spec.system_id, attempt=attempt)
            time.sleep(min(1.0, 0.1 * attempt))
        raise FailedPrecondition(
            f"chassis {self.spec.system_id}: ovn-controller keeps dying as it starts "
            f"({START_ATTEMPTS} tries); see {self.spec.root / 'ovn-controller.log'}"
        )

    def _controller_pid(self) -> int | None:
        return read_pid(self.spec.pid_file("ovn-controller"), "ovn-controller")

    def _spawn(self, daemon: str, *args: str) -> None:
        """Start `daemon` in the foreground (a child of this agent) in the chassis's namespace; again
        (up to START_ATTEMPTS times) while it ends as it starts: ovn-controller 23.03 crashes now and
        then in its first recompute (SIGSEGV; status 0 through nsenter), and starts on a later try.
        (It crashed far more often when br-int and its Datapath record were made before it started:
        it makes them itself.)"""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._spawn_once(daemon, *args)
                return
            except _DiedAtStart as exc:
                log.warning(
                    "chassis_daemon_died_at_start",
                    chassis=self.spec.system_id,
                    daemon=daemon,
                    attempt=attempt,
                    error=str(exc)[:300],
                )
                if attempt == START_ATTEMPTS:
                    raise FailedPrecondition(
                        f"chassis {self.spec.system_id}: {exc} ({attempt} tries)"
                    ) from exc
                time.sleep(min(1.0, 0.1 * attempt))

    def _spawn_once(self, daemon: str, *args: str) -> None:
        pid_file = self.spec.pid_file(daemon)
        pid_file.unlink(missing_ok=True)
        argv = [
            ovs.program(daemon),
            *args,
            f"--pidfile={pid_file}",
            f"--log-file={self.spec.root / (daemon + '.log')}",
            "-vconsole:off",
            "--no-chdir",
        ]
        if daemon != "ovn-controller":  # ovn-controller rejects --unixctl (its socket has its pid)
            argv.append(f"--unixctl={self.spec.root / (daemon + '.ctl')}")
        if self.spec.netns:
            # nsenter execs the daemon itself (`ip netns exec` may fork and exit 0, which read as the
            # daemon ending), and joins only the network namespace.
            argv = ["nsenter", f"--net={netns.path_of(self.spec.netns)}", "--", *argv]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.spec.env},
            start_new_session=True,
        )
        self._children.append(proc)
        self._wait(lambda: read_pid(pid_file, daemon) is not None or proc.poll() is not None, f"{daemon} up")
        if daemon == "ovn-controller":  # its crash comes within ~10 ms of its first recompute
            self._wait(lambda: self._connected() or proc.poll() is not None, f"{daemon} connected")
        if proc.poll() is not None:
            log_file = self.spec.root / (daemon + ".log")
            try:
                last = " | ".join(log_file.read_text(errors="replace").splitlines()[-3:])
            except OSError:
                last = ""
            raise _DiedAtStart(
                f"{daemon} ended with {proc.returncode} at start; {log_file} ends: {last[-400:]}"
            )

    def _wait(self, done: object, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        check = done if callable(done) else (lambda: bool(done))
        while not check():
            if time.monotonic() > deadline:
                raise Unavailable(f"chassis {self.spec.system_id}: not {what} after {timeout:.0f} s")
            time.sleep(0.02)

    def _connected(self) -> bool:
        pid = read_pid(self.spec.pid_file("ovn-controller"), "ovn-controller")
        if pid is None:
            return False
        ctl = self.spec.root / f"ovn-controller.{pid}.ctl"
        done = subprocess.run(
            [ovs.program("ovs-appctl"), "-t", str(ctl), "connection-status"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.returncode == 0 and done.stdout.strip() == "connected"

    def _underlay_on_br_phy(self) -> None:
        """br-phy (netdev) with the NIC as its port and the host's address on it (idempotent)."""
        self.vsctl(
            "--may-exist", "add-br", "br-phy", "--", "set", "Bridge", "br-phy", "datapath_type=netdev",
            "--", "--may-exist", "add-port", "br-phy", self.spec.nic,
        )  # fmt: skip
        self._wait(lambda: self._link_exists("br-phy"), "br-phy in the kernel")
        from services.agent import kernel  # noqa: PLC0415 - pyroute2 only for real hosts

        with kernel.ipr_in(self.spec.netns) as ipr:
            nic = kernel.link_or_none(ipr, self.spec.nic)
            phy = kernel.link_or_none(ipr, "br-phy")
            if nic is None or phy is None:
                raise FailedPrecondition(f"chassis {self.spec.system_id}: no {self.spec.nic} or br-phy")
            address = {"address": self.spec.encap_ip, "prefixlen": self.spec.prefix_len}
            if (self.spec.encap_ip, self.spec.prefix_len) in kernel.ipv4_addrs(ipr, nic["index"]):
                ipr.addr("del", index=nic["index"], **address)
            if (self.spec.encap_ip, self.spec.prefix_len) not in kernel.ipv4_addrs(ipr, phy["index"]):
                ipr.addr("add", index=phy["index"], **address)
            ipr.link("set", index=phy["index"], state="up")

    def _link_exists(self, ifname: str) -> bool:
        from services.agent import kernel  # noqa: PLC0415

        with kernel.ipr_in(self.spec.netns) as ipr:
            return kernel.link_or_none(ipr, ifname) is not None

    def stop(self) -> None:
        """Stop the daemons (newest first) and remove the chassis's files; the host's address goes back
        on its NIC. ovn-controller is asked to exit first, so it removes its chassis from the
        southbound database (SIGTERM would leave it there)."""
        pid = read_pid(self.spec.pid_file("ovn-controller"), "ovn-controller")
        if pid is not None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                subprocess.run(
                    [
                        ovs.program("ovs-appctl"),
                        "-t",
                        str(self.spec.root / f"ovn-controller.{pid}.ctl"),
                        "exit",
                    ],
                    capture_output=True,
                    timeout=STOP_TIMEOUT,
                    check=False,
                )
            # It removes its chassis from SB as it exits: let it finish before the rest stop.
            deadline = time.monotonic() + STOP_TIMEOUT
            while (
                read_pid(self.spec.pid_file("ovn-controller"), "ovn-controller")
                and time.monotonic() < deadline
            ):
                time.sleep(0.02)
        for daemon in reversed(DAEMONS):
            pid = read_pid(self.spec.pid_file(daemon), daemon)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for daemon in DAEMONS:
            pid_file = self.spec.pid_file(daemon)
            while read_pid(pid_file, daemon) is not None and time.monotonic() < deadline:
                time.sleep(0.02)
            pid = read_pid(pid_file, daemon)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self._children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_TIMEOUT)
        self._children.clear()
        if not self.spec.dummy and self.spec.netns and netns.exists(self.spec.netns):
            self._underlay_back_on_nic()
        for path in sorted(self.spec.root.glob("*"), reverse=True):
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.spec.root.rmdir()
        log.info("chassis_stopped", chassis=self.spec.system_id)

    def _underlay_back_on_nic(self) -> None:
        from services.agent import kernel  # noqa: PLC0415

        with contextlib.suppress(OSError), kernel.ipr_in(self.spec.netns) as ipr:
            phy = kernel.link_or_none(ipr, "br-phy")
            if phy is not None:
                ipr.link("del", index=phy["index"])
            nic = kernel.link_or_none(ipr, self.spec.nic)
            wanted = (self.spec.encap_ip, self.spec.prefix_len)
            if nic is not None and wanted not in kernel.ipv4_addrs(ipr, nic["index"]):
                ipr.addr("add", index=nic["index"], address=wanted[0], prefixlen=wanted[1])

    # ------------------------------------------------------------------ ports

    def vsctl(self, *args: str, timeout: float = 60.0) -> str:
        """ovs-vsctl against the chassis's database (its socket is reachable from any namespace)."""
        done = subprocess.run(
            [ovs.program("ovs-vsctl"), f"--db={self.spec.db_remote}", "--timeout=30", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise FailedPrecondition(
                f"chassis {self.spec.system_id}: ovs-vsctl {args[:3]}: {done.stderr.strip()[:300]}"
            )
        return done.stdout

    def configured_remote(self) -> str:
        """The southbound remote the chassis's database names ("" when it has none or is not running):
        a chassis restarted after a fault keeps it."""
        if read_pid(self.spec.pid_file("ovsdb-server"), "ovsdb-server") is None:
            return self.sb_remote
        try:
            value = self.vsctl(
                "--if-exists", "get", "Open_vSwitch", ".", "external_ids:ovn-remote", timeout=10
            )
        except (FailedPrecondition, subprocess.TimeoutExpired):
            return self.sb_remote
        return value.strip().strip('"') or self.sb_remote

    def _vsctl_ok(self, *args: str) -> bool:
        try:
            self.vsctl(*args, timeout=10)
        except (FailedPrecondition, subprocess.TimeoutExpired):
            return False
        return True

    def add_ports(self, ports: Sequence[tuple[str, str]]) -> None:
        """Plug interfaces into br-int, each with external_ids:iface-id (its logical switch port), in
        one transaction; a port already there is set again (idempotent)."""
        if not ports:
            return
        args: list[str] = ["--no-wait"]
        for ifname, iface_id in ports:
            args += [
                "--", "--may-exist", "add-port", "br-int", ifname,
                "--", "set", "Interface", ifname, f"external_ids:iface-id={iface_id}",
            ]  # fmt: skip
        self.vsctl(*args)

    def del_ports(self, ifnames: Sequence[str]) -> None:
        """Unplug interfaces from br-int in one transaction (absent ones are fine)."""
        if not ifnames:
            return
        args: list[str] = ["--no-wait"]
        for ifname in ifnames:
            args += ["--", "--if-exists", "del-port", "br-int", ifname]
        self.vsctl(*args)

    def ports(self) -> dict[str, str]:
        """br-int's interfaces that carry an iface-id: interface name -> iface-id."""
        out = self.vsctl(
            "--format=csv", "--data=bare", "--no-headings", "--columns=name,external_ids",
            "list", "Interface",
        )  # fmt: skip
        found: dict[str, str] = {}
        for line in out.splitlines():
            name, _, ids = line.partition(",")
            for item in ids.split():
                key, _, value = item.partition("=")
                if key == "iface-id":
                    found[name] = value
        return found
