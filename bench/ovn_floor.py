"""The floor of the OVN benchmark: the same NB rows and OVS interfaces made by a direct script, with no
emulator in between.

An OVN central of its own (NB, SB, northd) and `hosts` dummy chassis (ovsdb-server, ovs-vswitchd with
--enable-dummy=override, ovn-controller: the processes the agents start, started here the same way),
then per host, all hosts side by side: one NB transaction making its `per_host` logical switch ports
(spread over `switches` logical switches on one logical router, as the emulator's subnets are) and one
OVS transaction plugging them into the host's br-int. Each port's latency runs from the commit of its NB
transaction to `up` in NB, both seen by an IDL watching NB (`NbWatch`, the emulator's yardstick too); the
rate is the ports over the time from the first port's appearance to the last one's `up`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.ovn_northbound import impl_idl

from bench.ovn_procs import OvnProcesses
from merak import netns
from merak.stats import percentile
from merak_tools.ovncentral import RunningCentral
from services.agent.ovn.chassis import Chassis, ChassisSpec


@dataclass(frozen=True, slots=True)
class FloorResult:
    """What the direct script achieved."""

    ports: int
    up: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    # The window measured, in unix seconds (to line it up with other samples of the run).
    first_unix: float = 0.0
    last_unix: float = 0.0

    @property
    def ports_per_second(self) -> float:
        return self.up / self.seconds if self.seconds else 0.0


class _WatchIdl(connection.OvsdbIdl):  # type: ignore[misc]  # ovsdbapp has no type hints
    """An NB IDL that notes when each VM's logical switch port appears and when it goes `up`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created_at: dict[str, float] = {}
        self.up_at: dict[str, float] = {}

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if row._table.name != "Logical_Switch_Port" or getattr(row, "type", "") == "router":
            return
        now = time.monotonic()
        if event == "create":
            self.created_at.setdefault(row.name, now)
        if event in ("create", "update") and list(getattr(row, "up", [])) == [True]:
            self.up_at.setdefault(row.name, now)


class _Api(impl_idl.OvnNbApiIdlImpl):  # type: ignore[misc]  # ovsdbapp has no type hints
    """The NB API over this object's own connection (ovsdbapp keeps the first one per class: the
    emulator run's NB, gone when the floor runs)."""

    @property
    def ovsdb_connection(self) -> Any:
        return self._own_connection

    @ovsdb_connection.setter
    def ovsdb_connection(self, value: Any) -> None:
        self._own_connection = value


class NbWatch:
    """Watches an NB database from outside whatever makes the ports: when each VM port appears and
    goes up. The same yardstick for the emulator and for the floor."""

    def __init__(self, remote: str) -> None:
        self.idl = _WatchIdl.from_server(remote, "OVN_Northbound")
        self.connection = connection.Connection(idl=self.idl, timeout=120)
        self.api = _Api(self.connection)

    def wait_up(
        self, count: int, timeout: float = 600, exclude: set[str] | frozenset[str] = frozenset()
    ) -> None:
        """Until `count` ports (not named in `exclude`) are up, or the deadline."""
        deadline = time.monotonic() + timeout
        while len(self.idl.up_at.keys() - exclude) < count and time.monotonic() < deadline:
            time.sleep(0.005)

    def result(self, ports: int, exclude: set[str] | frozenset[str] = frozenset()) -> FloorResult:
        """Ports up, from the first port's appearance to the last one's `up`, with the latencies (the
        ports named in `exclude`, made before, left out)."""
        created = {n: t for n, t in self.idl.created_at.items() if n not in exclude}
        up = {n: t for n, t in self.idl.up_at.items() if n not in exclude}
        latencies = sorted((up[n] - created[n]) * 1000 for n in created if n in up)
        first = min(created.values(), default=0.0)
        last = max(up.values(), default=first)
        return FloorResult(
            ports=ports,
            up=len(latencies),
            seconds=last - first,
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            max_ms=latencies[-1] if latencies else 0.0,
            first_unix=first + (time.time() - time.monotonic()) if created else 0.0,
            last_unix=last + (time.time() - time.monotonic()) if created else 0.0,
        )

    def close(self) -> None:
        """Stop the IDL's thread."""
        self.connection.stop()


@contextmanager
def _chassis(central: RunningCentral, hosts: int, root: Path) -> Iterator[list[Chassis]]:
    made = [
        Chassis(ChassisSpec(f"floor-{h}", "", root / str(h), f"127.99.{h >> 8}.{h & 255}", "", 0, True))
        for h in range(hosts)
    ]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda ch: ch.ensure(central.sb), made))
        yield made
    finally:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda ch: ch.stop(), made))


def floor_dummy(
    hosts: int, per_host: int, switches: int, then: int = 0
) -> tuple[FloorResult, dict[str, Any], FloorResult | None]:
    """Run the floor once with dummy chassis, with what OVN's processes used meanwhile, and with `then`
    more ports per host made once the first ones are up (their result: the third value); everything
    it started is stopped before it returns."""
    root = Path(tempfile.mkdtemp(prefix="mk-floor-", dir="/tmp"))
    central = RunningCentral(root / "central")
    central.start()
    try:
        with _chassis(central, hosts, root / "chassis") as chassis, OvnProcesses(root) as processes:
            results = _run(central, chassis, per_host, switches, then)
        return results[0], processes.summary(results[0].seconds), results[1] if then else None
    finally:
        central.stop()
        shutil.rmtree(root, ignore_errors=True)


# The port groups and ACLs the ovn plugin makes for teste2e's network (acls.py: allow-related rules at
# 1002 for the security group, drop at 1001 for the config's drop group).
_GROUPS: dict[str, list[tuple[str, int, str, str]]] = {
    "floor_sg": [
        ("to-lport", 1002, "outport == @floor_sg && ip4", "allow-related"),
        ("from-lport", 1002, "inport == @floor_sg && ip4", "allow-related"),
    ],
    "floor_drop": [
        ("from-lport", 1001, "inport == @floor_drop && ip", "drop"),
        ("to-lport", 1001, "outport == @floor_drop && ip", "drop"),
    ],
}


def _run(
    central: RunningCentral,
    chassis: list[Chassis],
    per_host: int,
    switches: int,
    then: int = 0,
    *,
    make_vms: Callable[[int], None] | None = None,
) -> list[FloorResult]:
    """`per_host` ports on every host, measured; then, with `then`, `then` more on every host, measured
    on their own. With `make_vms`, a host's VMs are made (`make_vms(h)`) between its NB transaction and
    their plug into br-int, the order a cloud follows (port first, then the VM that plugs it) and the
    emulator's."""
    watch = NbWatch(central.nb)
    api = watch.api
    try:
        with api.transaction(check_error=True) as txn:
            txn.add(api.lr_add("floor-r"))
            for s in range(switches):
                txn.add(api.ls_add(f"floor-s{s}"))
                txn.add(api.lrp_add("floor-r", f"floor-rp{s}", f"02:fe:00:00:{s >> 8:02x}:{s & 255:02x}",
                                    [f"10.{s}.0.1/16"]))  # fmt: skip
                router_port = {"router-port": f"floor-rp{s}"}
                txn.add(api.lsp_add(f"floor-s{s}", f"floor-sp{s}", type="router",
                                    options=router_port, addresses=["router"]))  # fmt: skip
            # The emulator's ports are in a security group (teste2e's sg-1: IPv4 in and out, stateful)
            # and the config's drop group, as the ovn plugin writes them: the same rows here.
            for group, acls in _GROUPS.items():
                pg = txn.add(api.pg_add(group, acls=[], ports=[]))
                for direction, priority, match, action in acls:
                    txn.add(api.pg_acl_add(pg, direction, priority, match, action))

        def host(h: int, first: int = 0, count: int = per_host) -> None:
            names: list[str] = []
            ports: list[Any] = []
            with api.transaction(check_error=True) as txn:
                for v in range(first, first + count):
                    # A later round's ports are numbered after every first-round one.
                    n = h * per_host + v if not first else len(chassis) * per_host + h * count + v - first
                    s = n % switches
                    name = f"floor-p{h}-{v}"
                    mac, ip, _gateway, _prefix = _address(h, v, n, switches)
                    port = txn.add(api.lsp_add(f"floor-s{s}", name, addresses=[f"{mac} {ip}"],
                                               port_security=[f"{mac} {ip}"]))  # fmt: skip
                    names.append(name)
                    ports.append(port)
                for group in _GROUPS:
                    txn.add(api.pg_add_ports(group, ports))
            if make_vms is not None:
                make_vms(h)
            chassis[h].add_ports([(f"fp{first + v}", name) for v, name in enumerate(names)])

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(host, range(len(chassis))))
        total = len(chassis) * per_host
        watch.wait_up(total)
        results = [watch.result(total)]
        if then:
            before = set(watch.idl.created_at)
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(lambda h: host(h, per_host, then), range(len(chassis))))
            watch.wait_up(len(chassis) * then, exclude=before)
            results.append(watch.result(len(chassis) * then, exclude=before))
        return results
    finally:
        watch.close()


def _ip_batch(lines: list[str], namespace: str = "") -> None:
    """`ip -batch` (inside `namespace`, joined with nsenter: only its network namespace)."""
    enter = ["nsenter", f"--net={netns.path_of(namespace)}"] if namespace else []
    subprocess.run([*enter, "ip", "-batch", "-"], input="\n".join(lines).encode() + b"\n", check=True)


def _real_lab(prefix: str, hosts: int) -> list[str]:
    """Vhost namespaces on one bridge (underlay 192.168.251.0/24), made with iproute2, not timed."""
    switch = f"{prefix}sw"
    vhosts = [f"{prefix}v{h}" for h in range(hosts)]
    _ip_batch([f"netns add {switch}", *(f"netns add {v}" for v in vhosts)])
    _ip_batch(["link add br0 type bridge", "link set br0 up"], switch)
    for h, vhost in enumerate(vhosts):
        _ip_batch(
            [f"link add p{h} type veth peer name ul0 netns {vhost}", f"link set p{h} master br0 up"], switch
        )
        _ip_batch(["link set lo up", f"addr add 192.168.251.{h + 1}/24 dev ul0", "link set ul0 up"], vhost)
    return vhosts


def _real_vms(prefix: str, h: int, per_host: int, switches: int) -> None:
    """Host h's `per_host` VM namespaces, each a veth whose other end stays in the vhost (fp<v>, the name
    `_run` plugs into br-int), addressed as `_run` plans its ports: with `ip -batch`, the fastest a
    script makes them (one `ip` for the namespaces, one in the vhost, one per VM)."""
    vhost = f"{prefix}v{h}"
    vms = [f"{prefix}m{h}-{v}" for v in range(per_host)]
    _ip_batch([*(f"netns add {vm}" for vm in vms)])
    lines = [f"link add fp{v} mtu 1400 type veth peer name eth0 netns {vm}" for v, vm in enumerate(vms)]
    lines += [f"link set fp{v} up" for v in range(per_host)]
    _ip_batch(lines, vhost)
    for v, vm in enumerate(vms):
        mac, ip, gateway, prefix_len = _address(h, v, h * per_host + v, switches)
        _ip_batch(
            [
                "link set lo up",
                f"link set eth0 address {mac} mtu 1400",
                f"addr add {ip}/{prefix_len} dev eth0",
                "link set eth0 up",
                f"route add default via {gateway}",
            ],
            vm,
        )


def _address(h: int, v: int, n: int, switches: int) -> tuple[str, str, str, int]:
    """MAC (from the host and its VM's index v), IP, gateway and prefix (from n, the port's number over
    the whole run: its logical switch is n % switches) of VM v of host h, as `_run` plans its ports."""
    s = n % switches
    mac = f"02:fd:{h >> 8:02x}:{h & 255:02x}:{v >> 8:02x}:{v & 255:02x}"
    ip = f"10.{s}.{(n // switches + 2) >> 8}.{(n // switches + 2) & 255}"
    return mac, ip, f"10.{s}.0.1", 16


def floor_real(hosts: int, per_host: int, switches: int) -> tuple[FloorResult, dict[str, Any]]:
    """The floor on the real data plane: real chassis in vhost namespaces (geneve on a netdev br-phy),
    then per host the same NB rows as `floor_dummy`, its VMs made with `ip -batch` and plugged into
    br-int (timed: the emulator makes its VMs too); everything it made is removed before it returns."""
    prefix = f"mkf{os.getpid() % 10000}"
    root = Path(tempfile.mkdtemp(prefix="mk-floor-", dir="/tmp"))
    central = RunningCentral(root / "central")
    central.start()
    made: list[Chassis] = []
    try:
        vhosts = _real_lab(prefix, hosts)
        made = [
            Chassis(ChassisSpec(f"floor-real-{h}", vhost, root / "chassis" / str(h),
                                f"192.168.251.{h + 1}", "ul0", 24, dummy=False))
            for h, vhost in enumerate(vhosts)
        ]  # fmt: skip
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda ch: ch.ensure(central.sb), made))
        with OvnProcesses(root) as processes:
            result = _run(
                central, made, per_host, switches, make_vms=lambda h: _real_vms(prefix, h, per_host, switches)
            )[0]
        return result, processes.summary(result.seconds)
    finally:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda ch: ch.stop(), made))
        central.stop()
        for name in netns.list_names(prefix):
            netns.remove(name)
        shutil.rmtree(root, ignore_errors=True)
