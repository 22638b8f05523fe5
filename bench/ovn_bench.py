"""OVN as the control plane under test: how fast the emulator brings ports up, against the floor.

Starts a private local stack (OVN central included) and runs teste2e with the ovn plugin:
  1. `--hosts` x `--vms` (20 x 50 by default) on the fake data plane: every host a dummy chassis,
     1,000 logical switch ports bound with no data plane;
then, in the same run, the floor (bench/ovn_floor.py): the same NB rows and OVS interfaces made by a
direct script, on its own central and dummy chassis. Both are watched the same way, by an IDL on NB
(`NbWatch`): ports up per second from the first port's appearance to the last one's `up`, and the
latency of each port from its appearance to `up` (p50, p99, max). The emulator should reach 0.9 of the
floor's rate. With `--real H V` (10 x 10 by default), a second teste2e run on the real data plane is
timed the same way (its pings prove the data plane), beside a floor of real chassis in namespaces
(`floor_real`: per host its NB rows, its VMs made with `ip -batch`, their plug). Then ovn-heater's
"20 nodes density light" shape (bench/ovn_density.py): 20 hosts x 200 ports at startup, then 1,000
more each measured until up, for the emulator and the floor (`--no-density` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

from bench.ovn_density import emulator_density
from bench.ovn_floor import FloorResult, NbWatch, floor_dummy, floor_real
from bench.ovn_procs import OvnProcesses
from bench.results import Outcome, Row
from bench.stack import private_stack, teste2e_argv
from merak import ovs
from merak_tools import teste2e
from merak_tools.localstack import StackSettings

AIM = 0.9


async def emulator_run(
    settings: StackSettings, hosts: int, per_host: int, *, subnets: int, dataplane: str
) -> tuple[FloorResult, dict[str, Any]]:
    """teste2e with the ovn plugin, NB watched from outside; the watch's result and teste2e's report."""
    watch = NbWatch(ovs.Central(settings.state_dir / "ovn").remote("nb"))
    processes = OvnProcesses(settings.state_dir)
    try:
        argv = [
            *teste2e_argv(settings, f"report-{dataplane}.json"),
            "--plugin", "ovn", "--dataplane", dataplane,
            "--hosts", str(hosts), "--vms-per-host", str(per_host), "--subnets", str(subnets),
            "--max-pairs", "1000",
        ]  # fmt: skip
        with processes:
            report = await teste2e.main_async(teste2e.parse(argv))
        result = watch.result(hosts * per_host)
    finally:
        watch.close()
    if not report.ok:
        print(f"  {dataplane} FAILED: {report.errors[:3]}")
    operations = {op["operation"]: op for op in report.results.get("operations", [])}
    return result, {
        "ok": report.ok,
        "vms_done": report.vms_done,
        "phases": report.phases,
        "port_up": operations.get("port_up", {}).get("latency", {}),
        # Over the whole teste2e run (topology to teardown), not only while ports came up.
        "ovn_processes": processes.summary(sum(report.phases.values())),
        "test": {k: report.test.get(k) for k in ("pairs_tried", "passed", "cross_host_pairs")},
    }


def _row(name: str, result: FloorResult) -> str:
    return (
        f"  {name:<28} {result.up:>6}/{result.ports:<6} {result.seconds:>7.2f} s "
        f"{result.ports_per_second:>8.1f}/s p50 {result.p50_ms:>7.0f} ms  "
        f"p99 {result.p99_ms:>7.0f} ms  max {result.max_ms:>7.0f} ms"
    )


def _ratio_row(key: str, what: str, ours: FloorResult, floor: FloorResult, *, target: float | None,
               ok: bool, full_size: bool = True) -> Row:  # fmt: skip
    """Ours against the floor, ports up per second."""
    return Row(
        key,
        what,
        ours.ports_per_second / floor.ports_per_second if floor.ports_per_second else None,
        "x",
        target,
        detail=f"{ours.up:,} ports up in {ours.seconds:.1f} s ({ours.ports_per_second:.0f}/s)",
        reference=f"direct script {floor.seconds:.1f} s ({floor.ports_per_second:.0f}/s)",
        full_size=full_size,
        ok=ok,
    )


def main(argv: list[str] | None = None) -> Outcome:
    """Run the OVN benchmark."""
    parser = argparse.ArgumentParser(prog="python -m bench ovn")
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--vms", type=int, default=50, help="VMs (ports) per host")
    parser.add_argument("--subnets", type=int, default=10, help="logical switches the ports spread over")
    parser.add_argument("--real", nargs=2, type=int, default=[10, 10], metavar=("HOSTS", "VMS"))
    parser.add_argument("--no-real", action="store_true", help="skip the real-data-plane run")
    parser.add_argument(
        "--density", nargs=3, type=int, default=[20, 200, 1000], metavar=("HOSTS", "PORTS", "MORE"),
        help="ovn-heater's density-light shape: HOSTS x PORTS at startup, then MORE ports measured",
    )  # fmt: skip
    parser.add_argument("--no-density", action="store_true", help="skip the density-light run")
    parser.add_argument("--json", type=Path, default=Path("bench-ovn.json"))
    args = parser.parse_args(argv)
    gone = ovs.missing()
    if gone:
        print(f"ovn: skipped, OVN/OVS not installed (make install): {', '.join(gone)}")
        return Outcome(1)
    stack, settings = private_stack("mko", 17000)
    state = settings.state_dir
    runs: dict[str, Any] = {}
    try:
        stack.up()
        fake, fake_report = asyncio.run(
            emulator_run(settings, args.hosts, args.vms, subnets=args.subnets, dataplane="fake")
        )
        runs["emulator_fake"] = {**_as_dict(fake), **fake_report}
        if not args.no_real:
            hosts, per_host = args.real
            real, real_report = asyncio.run(
                emulator_run(settings, hosts, per_host, subnets=min(args.subnets, hosts), dataplane="real")
            )
            runs["emulator_real"] = {**_as_dict(real), **real_report}
        if not args.no_density:
            d_hosts, d_ports, d_more = args.density
            d_start, d_added, d_details = asyncio.run(
                emulator_density(settings, d_hosts, d_ports, d_more, args.subnets)
            )
            runs["density_emulator"] = {
                "start": _as_dict(d_start), "added": _as_dict(d_added), **d_details,
            }  # fmt: skip
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)
    floor, floor_processes, _none = floor_dummy(args.hosts, args.vms, args.subnets)
    runs["floor_fake"] = {**_as_dict(floor), "ovn_processes": floor_processes}
    ratio = fake.ports_per_second / floor.ports_per_second if floor.ports_per_second else 0.0
    runs["ratio_fake"] = ratio
    rows = [
        _ratio_row("ovn_vs_floor", f"OVN: {args.hosts:,} hosts x {args.vms} ports up (dummy datapath) vs the "
                   "floor, same run", fake, floor, target=AIM, ok=fake_report["ok"],
                   full_size=args.hosts * args.vms >= 1000),
    ]  # fmt: skip
    print(f"ovn: {args.hosts} hosts x {args.vms} ports over {args.subnets} logical switches, dummy datapath")
    print(_row("emulator (teste2e)", fake))
    print(_row("floor (direct script)", floor))
    verdict = "met" if ratio >= AIM else "MISSED"
    print(f"  emulator / floor ports per second: {ratio:.2f} (aim {AIM}): {verdict}")
    print(f"  port_up as the network service measured it: {fake_report['port_up']}")
    _print_processes("emulator run (teste2e, whole run)", fake_report["ovn_processes"])
    _print_processes("floor (while ports came up)", floor_processes)
    if "emulator_real" in runs:
        hosts, per_host = args.real
        floor_r, floor_r_processes = floor_real(hosts, per_host, min(args.subnets, hosts))
        runs["floor_real"] = {**_as_dict(floor_r), "ovn_processes": floor_r_processes}
        ratio_r = real.ports_per_second / floor_r.ports_per_second if floor_r.ports_per_second else 0.0
        runs["ratio_real"] = ratio_r
        rows.append(
            _ratio_row("ovn_real_vs_floor", f"OVN: {hosts:,} hosts x {per_host} VMs up, real data plane, vs "
                       "the floor, same run", real, floor_r, target=None, ok=runs["emulator_real"]["ok"])
        )  # fmt: skip
        print(f"ovn real data plane: {hosts} hosts x {per_host} VMs")
        print(_row("emulator (teste2e)", real))
        print(_row("floor (direct script)", floor_r))
        print(
            f"  emulator / floor ports per second: {ratio_r:.2f} (both make each host's VMs between its "
            "ports' insert and their plug)"
        )
        print(f"  pings: {runs['emulator_real']['test']}")
    if "density_emulator" in runs:
        d_hosts, d_ports, d_more = args.density
        f_start, _procs, f_added = floor_dummy(d_hosts, d_ports, args.subnets, then=d_more // d_hosts)
        assert f_added is not None
        runs["density_floor"] = {"start": _as_dict(f_start), "added": _as_dict(f_added)}
        print(
            f"ovn-heater density light: {d_hosts} hosts x {d_ports} ports at startup, then {d_more} more, "
            "dummy datapath"
        )
        print(_row("emulator: startup", d_start))
        print(_row("floor: startup", f_start))
        print(_row("emulator: the ports after", d_added))
        print(_row("floor: the ports after", f_added))
        for phase, ours, floor_phase in (("startup", d_start, f_start), ("after", d_added, f_added)):
            share = (
                ours.ports_per_second / floor_phase.ports_per_second if floor_phase.ports_per_second else 0.0
            )
            runs[f"ratio_density_{phase}"] = share
            print(f"  emulator / floor ports per second, {phase}: {share:.2f}")
        lab = runs["density_emulator"]
        print(f"  emulator's lab: {lab.get('update', '')}; teardown {lab.get('teardown')}")
    args.json.write_text(json.dumps(runs, indent=2, default=str))
    print(f"  written: {args.json}")
    ok = (
        fake_report["ok"]
        and runs.get("emulator_real", {"ok": True})["ok"]
        and runs.get("density_emulator", {"ok": True})["ok"]
    )
    return Outcome(0 if ok else 1, rows)


def _print_processes(title: str, processes: dict[str, dict[str, float]]) -> None:
    print(f"  OVN processes, {title}: CPU seconds (cores), peak RSS")
    for group, use in processes.items():
        print(
            f"    {group:<16} {use['cpu_seconds']:>7.2f} s ({use['cores']:.2f})  "
            f"{use['peak_rss_mib']:>7.1f} MiB  x{use['processes']:.0f}"
        )


def _as_dict(result: FloorResult) -> dict[str, Any]:
    return {
        "ports": result.ports,
        "up": result.up,
        "seconds": round(result.seconds, 3),
        "ports_per_second": round(result.ports_per_second, 1),
        "p50_ms": round(result.p50_ms, 1),
        "p99_ms": round(result.p99_ms, 1),
        "max_ms": round(result.max_ms, 1),
        "window_unix": [round(result.first_unix, 3), round(result.last_unix, 3)],
    }
