"""The floor of the OVN benchmark: the same NB rows and OVS interfaces made by a direct script, with no
emulator in between.

An OVN central of its own (NB, SB, northd) and `hosts` dummy chassis (ovsdb-server, ovs-vswitchd with
--enable-dummy=override, ovn-controller: the processes the agents start, started here the same way),
then per host, all hosts side by side: one NB transaction making its `per_host` logical switch ports
(spread over `switches` logical switches on one logical router, as the emulator's subnets are) and one
OVS transaction plugging them into the host's br-int. Each port's latency runs from the commit of its NB
transaction to `up` in NB, seen by an IDL's notify as northd writes it; the rate is the ports over the
time from the first insert to the last `up`.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ovsdbapp.backend.ovs_idl import connection
from ovsdbapp.schema.ovn_northbound import impl_idl

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

    @property
    def ports_per_second(self) -> float:
        return self.up / self.seconds if self.seconds else 0.0


class _UpIdl(connection.OvsdbIdl):  # type: ignore[misc]  # ovsdbapp has no type hints
    """An NB IDL that notes when each logical switch port goes `up`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.up_at: dict[str, float] = {}

    def notify(self, event: str, row: Any, updates: Any = None) -> None:
        if event != "update" or row._table.name != "Logical_Switch_Port":
            return
        if list(getattr(row, "up", [])) == [True] and row.name not in self.up_at:
            self.up_at[row.name] = time.monotonic()


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


def floor_dummy(hosts: int, per_host: int, switches: int) -> FloorResult:
    """Run the floor once with dummy chassis; everything it started is stopped before it returns."""
    root = Path(tempfile.mkdtemp(prefix="mk-floor-", dir="/tmp"))
    central = RunningCentral(root / "central")
    central.start()
    try:
        with _chassis(central, hosts, root / "chassis") as chassis:
            return _run(central, chassis, per_host, switches)
    finally:
        central.stop()
        shutil.rmtree(root, ignore_errors=True)


def _run(central: RunningCentral, chassis: list[Chassis], per_host: int, switches: int) -> FloorResult:
    idl = _UpIdl.from_server(central.nb, "OVN_Northbound")
    conn = connection.Connection(idl=idl, timeout=120)
    api = impl_idl.OvnNbApiIdlImpl(conn)
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
        inserted: dict[str, float] = {}
        lock = threading.Lock()

        def host(h: int) -> None:
            names = []
            with api.transaction(check_error=True) as txn:
                for v in range(per_host):
                    n = h * per_host + v
                    s = n % switches
                    name = f"floor-p{h}-{v}"
                    mac = f"02:fd:{h >> 8:02x}:{h & 255:02x}:{v >> 8:02x}:{v & 255:02x}"
                    ip = f"10.{s}.{(n // switches + 2) >> 8}.{(n // switches + 2) & 255}"
                    txn.add(api.lsp_add(f"floor-s{s}", name, addresses=[f"{mac} {ip}"],
                                        port_security=[f"{mac} {ip}"]))  # fmt: skip
                    names.append(name)
            committed = time.monotonic()
            with lock:
                inserted.update(dict.fromkeys(names, committed))
            chassis[h].add_ports([(f"fp{v}", name) for v, name in enumerate(names)])

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(host, range(len(chassis))))
        total = len(chassis) * per_host
        deadline = time.monotonic() + 600
        while len(idl.up_at) < total and time.monotonic() < deadline:
            time.sleep(0.005)
        latencies = sorted((idl.up_at[n] - inserted[n]) * 1000 for n in inserted if n in idl.up_at)
        last = max(idl.up_at.values(), default=started)
        return FloorResult(
            ports=total,
            up=len(latencies),
            seconds=last - started,
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            max_ms=latencies[-1] if latencies else 0.0,
        )
    finally:
        conn.stop()
