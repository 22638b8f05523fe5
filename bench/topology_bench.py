"""Bring-up and teardown of a real emulated data centre on this machine, beside Mininet in the same run.

Ours: the topology service's local backend (namespaces, veth pairs, bridges, agents ready).
Reference: Mininet (`mn --switch lxbr --controller none --topo tree,…`), when installed
(`apt-get install mininet bridge-utils`). Prints seconds, vhosts per second and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.results import Outcome, expected
from merak import netns
from merak.v1 import topology_pb2
from services.topology.backends.local import LocalBackend, ns_prefix
from services.topology.generator import generate, spec_from_proto


async def run_ours(vhosts: int, per_rack: int, run_root: Path) -> tuple[float, float]:
    """Deploy then destroy `vhosts` real vhosts; returns (bring-up s, teardown s); checks for leaks."""
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=f"bench-{os.getpid()}-{vhosts}",
        topology_type=topology_pb2.TREE,
        number_of_vhosts=vhosts,
        vhost_per_rack=per_rack,
        ports_per_vswitch=per_rack,
        data_plane_cidr="10.128.0.0/12",
    )
    topology = generate(spec_from_proto(config))
    backend = LocalBackend(run_root)

    async def ready(_names: list[str]) -> None:
        return None

    start = time.perf_counter()
    try:
        await backend.deploy(topology, ready)
        up = time.perf_counter() - start
        states = await backend.inspect(topology, built=True)
        not_ready = [name for name, state in states.items() if state.status != 2]
        if not_ready:
            raise RuntimeError(f"{len(not_ready)} vhosts not READY after deploy")
    finally:
        start_down = time.perf_counter()
        await backend.destroy(topology.spec)
        down = time.perf_counter() - start_down
        await backend.close()
    leaked = netns.list_names(ns_prefix(topology.spec.short_id))
    if leaked:
        raise RuntimeError(f"leaked namespaces: {leaked[:5]}")
    return up, down


def run_mininet(fanout: int) -> float | None:
    """Seconds Mininet takes to build and tear down a depth-2 tree of fanout² hosts, or None."""
    if shutil.which("mn") is None:
        return None
    start = time.perf_counter()
    subprocess.run(
        ["mn", "--switch", "lxbr", "--controller", "none", "--topo", f"tree,depth=2,fanout={fanout}",
         "--test", "none"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> Outcome:
    """Run the topology benchmark; its row: the ratio to Mininet."""
    parser = argparse.ArgumentParser(prog="python -m bench topology")
    parser.add_argument("--vhosts", type=int, default=1000)
    parser.add_argument(
        "--mininet-fanout", type=int, default=32, help="Mininet tree fanout (hosts = fanout²)"
    )
    args = parser.parse_args(argv)
    run_root = Path(tempfile.mkdtemp(prefix="mkb", dir="/tmp"))
    try:
        up, down = asyncio.run(run_ours(args.vhosts, 32, run_root))
    finally:
        shutil.rmtree(run_root, ignore_errors=True)
    ours_total = up + down
    print(f"merak local backend: {args.vhosts} vhosts up in {up:.2f}s, down in {down:.2f}s "
          f"(total {ours_total:.2f}s, {args.vhosts / up:.0f} vhosts/s)")  # fmt: skip
    hosts = args.mininet_fanout**2
    row = expected("topology_vs_mininet").row(
        f"topology: {args.vhosts:,} emulated hosts up+down vs Mininet ({hosts:,} hosts), same run",
        None,
        detail=f"{args.vhosts:,} vhosts up {up:.1f} s, down {down:.1f} s ({args.vhosts / ours_total:.0f}/s)",
        full_size=args.vhosts >= 1000,
    )
    reference = run_mininet(args.mininet_fanout)
    if reference is None:
        print("mininet: not installed (apt-get install mininet bridge-utils); no reference this run")
        return Outcome(0, [replace(row, reference="Mininet", note="Mininet not installed")])
    print(f"mininet (lxbr, no controller): {hosts} hosts up+down in {reference:.2f}s "
          f"({hosts / reference:.0f} hosts/s)")  # fmt: skip
    ratio = (args.vhosts / ours_total) / (hosts / reference)
    print(f"ratio (ours / mininet, hosts per second up+down): {ratio:.2f}x")
    reference_text = f"Mininet (lxbr): {hosts:,} hosts up+down {reference:.1f} s ({hosts / reference:.0f}/s)"
    return Outcome(0, [replace(row, value=ratio, reference=reference_text)])
