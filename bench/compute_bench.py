"""VM creation at scale through the whole product: a private local stack driven by teste2e.

Starts a local stack of its own (processes, as `merak up` does, on shifted ports, in a temporary
state directory), then runs teste2e: 100 vhosts x 100 VMs with the real dataplane and 10,000 vhosts x
100 VMs with the fake one (both configurable). The compute phase — CREATE until every VM is DONE and
the overlay is programmed — gives VMs/s. The real rate is compared with the `ip -batch` reference
(bench/agent_bench.py) measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
from pathlib import Path

from bench.agent_bench import run_reference
from bench.stack import MemorySampler, private_stack, teste2e_argv
from merak import teste2e
from merak.localstack import StackSettings


async def one(settings: StackSettings, hosts: int, per_host: int, dataplane: str) -> tuple[int, float] | None:
    """Run teste2e at one size; (VMs done, compute phase seconds), or None when no VM was deployed."""
    argv = [
        *teste2e_argv(settings, f"report-{dataplane}.json"),
        "--hosts",
        str(hosts),
        "--vms-per-host",
        str(per_host),
        "--dataplane",
        dataplane,
        "--vhosts-per-rack",
        "32",
        "--ports-per-switch",
        "32",
        "--max-pairs",
        "1000",
    ]
    report = await teste2e.main_async(teste2e.parse(argv))
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items())
    print(f"  {dataplane}: {hosts} vhosts x {per_host} VMs: {phases}")
    if not report.ok:
        print(f"  FAILED: {report.errors}")
    if "deploy compute" not in report.phases or not report.vms_done:
        return None
    return report.vms_done, report.phases["deploy compute"]


def main(argv: list[str] | None = None) -> int:
    """Run the compute benchmark."""
    parser = argparse.ArgumentParser(prog="python -m bench compute")
    parser.add_argument("--real-hosts", type=int, default=100)
    parser.add_argument("--fake-hosts", type=int, default=10_000)
    parser.add_argument("--vms", type=int, default=100, help="VMs per vhost")
    args = parser.parse_args(argv)
    stack, settings = private_stack("mkc", 14000)
    state = settings.state_dir
    results: dict[str, tuple[int, float]] = {}
    memory: dict[str, MemorySampler] = {}
    status = 0
    try:
        stack.up()
        for dataplane, hosts in (("real", args.real_hosts), ("fake", args.fake_hosts)):
            if hosts:
                with MemorySampler(state) as sampler:
                    outcome = asyncio.run(one(settings, hosts, args.vms, dataplane))
                memory[dataplane] = sampler
                if outcome is None:
                    status = 1
                else:
                    results[dataplane] = outcome
    finally:
        stack.down()
    reference_rate = 0.0
    if "real" in results:
        work = Path(tempfile.mkdtemp(prefix="mkr", dir="/tmp"))
        try:
            count = 1000
            reference_rate = count / run_reference(count, work, f"mkr{os.getpid()}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"ip -batch reference: {reference_rate:.0f} VMs/s (1,000 VMs in one namespace set)")
    for dataplane, (done, seconds) in results.items():
        line = f"{dataplane}: {done} VMs through compute in {seconds:.1f}s = {done / seconds:.0f} VMs/s"
        if dataplane == "real" and reference_rate:
            line += f"; ratio to ip -batch {done / seconds / reference_rate:.2f}"
        print(line)
        sampled = memory[dataplane]
        print(
            f"{dataplane}: peak memory of the stack's processes {sampled.peak_rss_kib / 2**20:.2f} GiB; "
            f"the machine's at most {sampled.peak_used_kib / 2**20:.2f} GiB above the start "
            f"= {sampled.peak_used_kib / done:.0f} KiB per VM (kernel objects and processes)"
        )
    shutil.rmtree(state, ignore_errors=True)
    return status
