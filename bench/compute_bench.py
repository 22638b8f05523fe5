"""VM creation at scale through the whole product: a private local stack driven by teste2e.

Starts a local stack of its own (processes, as `merak up` does, on shifted ports, in a temporary
state directory) and runs teste2e four times, ping sample and teardown included:
- real, 100 vhosts x 100 VMs: the VM rate (the compute phase: CREATE until every VM is DONE and the
  overlay is programmed), compared with iproute2 building the same lab (bench/reference.py) in the
  same run, after the stack is down;
- real, 200 vhosts x 100 VMs: the memory one real VM costs the machine (kernel objects and processes);
- fake, 10,000 vhosts x 100 VMs: a million VMs, their time and the stack's peak memory;
- real, 5 vhosts x 40 VMs churned at 20 VMs/s for 60 s: the churn rate achieved against the rate
  asked (their ratio), and the VMs alive meanwhile (the tests check the churn's behaviour, not its rate).
Every size is a flag; a size of 0 skips its run. The summary at the end holds the numbers, and the
rows of issue #31's table. `python -m bench million` is the fake run alone, and keeps teste2e's report
of it (`bench-million-report.json` and `.html`: phases, results, plots); `--reports DIR` keeps every
run's report in DIR (otherwise none is written).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.reference import ReferenceTimes, lab_reference, prefix_for, wait_quiet
from bench.results import Outcome, Row, expected
from bench.stack import MemorySampler, private_stack, teste2e_argv
from merak_tools import teste2e
from merak_tools.localstack import StackSettings


@dataclass
class Run:
    """One teste2e run's numbers."""

    label: str
    hosts: int
    per_host: int
    done: int = 0
    seconds: float = 0.0
    ping_passed: int = 0
    ping_tried: int = 0
    ok: bool = False
    memory: MemorySampler | None = None
    # Churn once the VMs are made (0: none): asked, then what the results say.
    churn_rate: float = 0.0
    churn_seconds: float = 0.0
    churned: int = 0
    alive: tuple[int, int] = (0, 0)
    # Per-host address blocks (the overlay routed by block), 0: none.
    block_prefix: int = 0
    # teste2e's report of the run kept where the user asked (JSON, and its HTML page beside it).
    report: Path | None = None
    # The single calls a user waits on, timed at the client (teste2e's report.calls), and the teardown.
    calls: dict[str, float] = field(default_factory=dict)
    teardown: float = 0.0

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds else 0.0


async def one(settings: StackSettings, run: Run, dataplane: str) -> None:
    """Run teste2e at one size and fill `run` in."""
    argv = [
        *teste2e_argv(settings, f"report-{run.label}.json", run.report),
        "--hosts", str(run.hosts),
        "--vms-per-host", str(run.per_host),
        "--dataplane", dataplane,
        "--vhosts-per-rack", "32",
        "--ports-per-switch", "32",
        "--max-pairs", "1000",
    ]  # fmt: skip
    if run.churn_rate:
        argv += ["--churn-rate", str(run.churn_rate), "--churn-seconds", str(run.churn_seconds)]
    if run.block_prefix:
        argv += ["--block-prefix", str(run.block_prefix)]
    opts = teste2e.parse(argv)
    report = await teste2e.main_async(opts)
    if run.report is not None:
        teste2e.write_reports(report, opts)
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items())
    print(f"  {run.label}: {run.hosts} vhosts x {run.per_host} VMs: {phases}")
    calls = ", ".join(f"{k} {v:.2f}s" for k, v in report.calls.items())
    print(f"  {run.label}: single calls (client side): {calls}")
    if not report.ok:
        print(f"  FAILED: {report.errors}")
    run.ok = report.ok
    run.done = report.vms_done
    run.seconds = report.phases.get("deploy compute", 0.0)
    run.calls = dict(report.calls)
    run.teardown = report.phases.get("teardown", 0.0)
    run.ping_passed = int(report.test.get("passed", 0))
    run.ping_tried = int(report.test.get("pairs_tried", 0))
    run.churned = int(report.results.get("churned", 0))
    run.alive = (int(report.results.get("population_min", 0)), int(report.results.get("population_max", 0)))


def report_path(directory: Path | None, label: str) -> Path | None:
    """Where a run's teste2e report is kept (None: none is written)."""
    if directory is None:
        return None
    return directory / f"bench-{'million' if label == 'fake' else label}-report.json"


def report_lines(run: Run) -> list[str]:
    """Where the run's teste2e report was kept, if it was asked for and written."""
    if run.report is None or not run.report.exists():
        return []
    return [f"{run.label}: teste2e's report {run.report} and {run.report.with_suffix('.html')}"]


def summary(runs: list[Run], reference: ReferenceTimes | None) -> list[str]:
    """The benchmark's result lines."""
    lines = []
    for run in runs:
        if run.churn_rate:
            # Its compute phase holds the churn: the VM rate of the other runs means nothing here.
            achieved = run.churned / run.churn_seconds
            lines.append(
                f"{run.label}: {run.churned:,} VMs replaced in {run.churn_seconds:g}s = {achieved:.1f} VMs/s "
                f"against {run.churn_rate:g} VMs/s asked: ratio {achieved / run.churn_rate:.2f}; VMs alive "
                f"between {run.alive[0]:,} and {run.alive[1]:,} (population {run.hosts * run.per_host:,})"
            )
            lines.append(f"{run.label}: ping sample {run.ping_passed:,} of {run.ping_tried:,} pairs passed")
            lines += report_lines(run)
            continue
        line = f"{run.label}: {run.done:,} VMs through compute in {run.seconds:.1f}s = {run.rate:,.0f} VMs/s"
        if run.label == "real" and reference is not None:
            reference_rate = run.done / reference.total
            line += f"; iproute2 builds the same lab at {reference_rate:.0f} VMs/s"
            line += f": ratio {run.rate / reference_rate:.2f}"
        lines.append(line)
        lines.append(f"{run.label}: ping sample {run.ping_passed:,} of {run.ping_tried:,} pairs passed")
        memory = run.memory
        if memory is not None and run.done:
            lines.append(
                f"{run.label}: peak memory of the stack's processes {memory.peak_pss_kib / 2**20:.2f} GiB "
                f"(PSS; RSS summed {memory.peak_rss_kib / 2**20:.2f}); "
                f"the machine's at most {memory.peak_used_kib / 2**20:.2f} GiB above the start = "
                f"{memory.peak_used_kib / run.done:.0f} KiB per VM (kernel objects and processes)"
            )
        lines += report_lines(run)
    if reference is not None:
        lines.append(
            f"iproute2 reference: {reference.vms:.1f}s for the VMs, {reference.overlay:.1f}s for the overlay "
            "(ip/bridge -batch, one call per namespace)"
        )
    return lines


MILLION = 1_000_000


def fake_rows(run: Run) -> list[Row]:
    """The million's rows (at whatever size the fake run had: `what` says it)."""
    vms = run.hosts * run.per_host
    size = f"{vms:,} VMs, fake data plane ({run.hosts:,} hosts x {run.per_host})"
    full = vms >= MILLION
    peak = run.memory.peak_pss_kib if run.memory is not None else 0
    rss = run.memory.peak_rss_kib if run.memory is not None else 0
    client_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures: list[tuple[str, str, float | None, str]] = [
        ("million_deploy_call", "the compute DEPLOY call", run.calls.get("DEPLOY compute"), "at the client"),
        ("million_compute_phase", "the compute phase", run.seconds or None, f"{run.rate:,.0f} VMs/s"),
        ("million_get_results", "GetResults", run.calls.get("GetResults"), "at the client"),
        ("million_peak_memory", "peak memory of the stack's processes", peak / 2**20 if peak else None,
         f"{peak / max(run.done, 1):,.1f} KiB per VM (PSS; RSS summed {rss / 2**20:.2f} GiB); the client "
         f"(this process) {client_mib:,.0f} MiB at most"),
        ("million_teardown", "teardown", run.teardown or None, "nothing left" if run.ok else ""),
    ]  # fmt: skip
    return [
        expected(key).row(f"{size}: {name}", value, detail=detail, full_size=full, ok=run.ok)
        for key, name, value, detail in figures
    ]


def real_rows(run: Run, reference: ReferenceTimes | None) -> list[Row]:
    """The real rate run against iproute2 in the same invocation."""
    if reference is None or not run.seconds:
        return []
    reference_rate = run.done / reference.total
    return [
        expected("real_vs_ip_batch").row(
            f"end to end real, {run.hosts:,} hosts x {run.per_host} VMs incl. overlay vs ip/bridge -batch, "
            "same run",
            run.rate / reference_rate,
            detail=f"{run.done:,} VMs in {run.seconds:.1f} s ({run.rate:.0f}/s)",
            reference=f"ip/bridge -batch {reference.total:.1f} s ({reference_rate:.0f}/s)",
            full_size=run.hosts * run.per_host >= 10_000,
            ok=run.ok,
        )
    ]


def memory_rows(run: Run) -> list[Row]:
    """The memory one real VM costs the machine, from the memory run."""
    if run.memory is None or not run.done:
        return []
    per_vm = run.memory.peak_used_kib / run.done
    return [
        expected("real_vm_memory").row(
            f"real VMs, {run.hosts:,} hosts x {run.per_host}: the machine's memory per VM",
            per_vm,
            detail=f"{run.memory.peak_used_kib / 2**20:.2f} GiB above the start for {run.done:,} VMs",
            full_size=run.done >= 20_000,
            ok=run.ok,
        )
    ]


def rows_of(runs: list[Run], reference: ReferenceTimes | None) -> list[Row]:
    """The rows of issue #31's table this run measured."""
    found: list[Row] = []
    for run in runs:
        if run.label == "fake":
            found += fake_rows(run)
        elif run.label == "real":
            found += real_rows(run, reference)
        elif run.label == "real-memory":
            found += memory_rows(run)
    return found


def million(argv: list[str] | None = None) -> Outcome:
    """The million alone: the compute benchmark's fake run (10,000 hosts x 100 VMs unless flags say)."""
    alone = ["--real-hosts", "0", "--memory-hosts", "0", "--churn-hosts", "0", "--reports", "."]
    alone += argv or []
    return main(alone, prog="python -m bench million")


def main(argv: list[str] | None = None, prog: str = "python -m bench compute") -> Outcome:
    """Run the compute benchmark."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--real-hosts", type=int, default=100, help="vhosts of the rate run (real)")
    parser.add_argument("--memory-hosts", type=int, default=200, help="vhosts of the memory run (real)")
    parser.add_argument("--fake-hosts", type=int, default=10_000, help="vhosts of the fake run")
    parser.add_argument("--vms", type=int, default=100, help="VMs per vhost")
    parser.add_argument("--churn-hosts", type=int, default=5, help="vhosts of the churn run (real)")
    parser.add_argument("--churn-vms", type=int, default=40, help="VMs per vhost of the churn run")
    parser.add_argument("--churn-rate", type=float, default=20.0, help="VMs replaced per second asked")
    parser.add_argument("--churn-seconds", type=float, default=60.0, help="how long the churn runs")
    parser.add_argument(
        "--block-prefix",
        type=int,
        default=0,
        help="the memory run with per-host address blocks of this prefix length and the overlay routed "
        "by block (e.g. 25 for 100 VMs a host); 0: a neighbour per remote VM",
    )
    parser.add_argument(
        "--reports",
        type=Path,
        default=None,
        help="keep each run's teste2e report in this directory (bench-<run>-report.json and .html; the "
        "fake run's is bench-million-report.*); by default none is written",
    )
    args = parser.parse_args(argv)
    if args.reports is not None:
        args.reports.mkdir(parents=True, exist_ok=True)
    if args.churn_rate <= 0 or args.churn_seconds <= 0:
        parser.error("--churn-rate and --churn-seconds must be above 0 (--churn-hosts 0 skips the run)")
    stack, settings = private_stack("mkc", 14000)
    runs = [
        Run(
            label,
            hosts,
            args.vms,
            block_prefix=args.block_prefix if label == "real-memory" else 0,
            report=report_path(args.reports, label),
        )
        for label, hosts in (
            ("real", args.real_hosts),
            ("real-memory", args.memory_hosts),
            ("fake", args.fake_hosts),
        )
        if hosts
    ]
    if args.churn_hosts:
        runs.append(
            Run(
                "churn",
                args.churn_hosts,
                args.churn_vms,
                churn_rate=args.churn_rate,
                churn_seconds=args.churn_seconds,
                report=report_path(args.reports, "churn"),
            )
        )
    print(f"compute benchmark: a private stack in {settings.state_dir}")
    try:
        stack.up()
        for run in runs:
            # The kernel frees a torn-down lab's namespaces in the background for minutes.
            waited = wait_quiet()
            after = f" (after {waited:.0f}s waiting for a quiet machine)" if waited >= 2 else ""
            print(f"  {run.label}: {run.hosts:,} vhosts x {run.per_host} VMs{after}")
            with MemorySampler(settings.state_dir) as sampler:
                asyncio.run(one(settings, run, "fake" if run.label == "fake" else "real"))
            run.memory = sampler
    finally:
        stack.down()
    reference = None
    if any(r.label == "real" and r.done for r in runs):
        wait_quiet()
        reference = lab_reference(args.real_hosts, args.vms, prefix_for("mkr"))
    print("compute benchmark:")
    for line in summary(runs, reference):
        print(f"  {line}")
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    return Outcome(0 if all(r.ok for r in runs) else 1, rows_of(runs, reference))
