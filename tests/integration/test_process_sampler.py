"""The topology service's count of a lab's chassis in the southbound database (ProcessSampler.registered),
read straight over OVSDB's JSON-RPC from a real central started by the test, on its unix socket and on
loopback TCP; and the Prometheus gauges of the samples, gone with the lab."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from merak import ovs
from merak_tools.ovncentral import RunningCentral
from services.topology.backends.local.processes import ProcessSampler
from services.topology.metrics import TopologyMetrics

pytestmark = pytest.mark.root


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A lab's run directory: a chassis directory per emulated host."""
    root = Path(tempfile.mkdtemp(prefix="mk-ps-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _describe(run_dir: Path, index: int, system_id: str, sb_remote: str) -> None:
    root = run_dir / "ovn" / str(index)
    root.mkdir(parents=True)
    (root / ovs.CHASSIS_FILE).write_text(json.dumps({"system_id": system_id, "sb_remote": sb_remote}))


def _sbctl(central: RunningCentral, *args: str) -> None:
    subprocess.run([ovs.program("ovn-sbctl"), f"--db={central.sb}", *args], check=True, capture_output=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_chassis_listed_in_sb_are_counted(ovn_central: RunningCentral, run_dir: Path) -> None:
    sampler = ProcessSampler(run_dir / "stack-run")
    assert sampler.registered(run_dir) is None  # no chassis: nothing to count
    _describe(run_dir, 0, "mk-ps-host-0", ovn_central.sb)
    _describe(run_dir, 1, "mk-ps-host-1", ovn_central.sb)
    assert sampler.registered(run_dir) == (0, 2)
    _sbctl(ovn_central, "chassis-add", "mk-ps-host-1", "geneve", "127.0.0.1")
    _sbctl(ovn_central, "chassis-add", "mk-ps-other", "geneve", "127.0.0.2")  # not the lab's
    try:
        assert sampler.registered(run_dir) == (1, 2)
        # The same database over loopback TCP: read the same way.
        port = _free_port()
        subprocess.run(
            [ovs.program("ovs-appctl"), "-t", str(ovn_central.central.root / "ovnsb_db.ctl"),
             "ovsdb-server/add-remote", f"ptcp:{port}:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        listed = ovs.select_column(f"tcp:127.0.0.1:{port}", "OVN_Southbound", "Chassis", "name", timeout=5)
        assert sorted(map(str, listed)) == ["mk-ps-host-1", "mk-ps-other"]
        # A chassis whose SB cannot be read is left out; none readable: no sample rather than a zero.
        _describe(run_dir, 2, "mk-ps-host-2", "unix:/nonexistent/sb.sock")
        assert sampler.registered(run_dir) == (1, 2)
        assert ProcessSampler(run_dir).registered(run_dir / "none") is None
        lone = run_dir / "lone"
        _describe(lone, 0, "mk-ps-host-9", "unix:/nonexistent/sb.sock")
        assert sampler.registered(lone) is None
    finally:
        _sbctl(ovn_central, "chassis-del", "mk-ps-host-1")
        _sbctl(ovn_central, "chassis-del", "mk-ps-other")


def test_samples_reach_stats_and_gauges_until_forgotten(ovn_central: RunningCentral, run_dir: Path) -> None:
    registry = CollectorRegistry()
    sampler = ProcessSampler(run_dir / "stack-run", TopologyMetrics.create(registry))
    _describe(run_dir, 0, "mk-ps-host-0", ovn_central.sb)
    _sbctl(ovn_central, "chassis-add", "mk-ps-host-0", "geneve", "127.0.0.1")
    try:
        sampler.sample("lab-1", run_dir, now=100.0)
    finally:
        _sbctl(ovn_central, "chassis-del", "mk-ps-host-0")
    sampler.sample("lab-1", run_dir, now=101.0)
    stats = sampler.stats("lab-1")
    assert [(c.at, c.registered, c.chassis) for c in stats.chassis] == [(100.0, 1, 1), (101.0, 0, 1)]
    assert [c.at for c in sampler.stats("lab-1", since=100.5).chassis] == [101.0]

    def gauge(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"topology": "lab-1", **labels})

    assert gauge("merak_topology_ovn_chassis", state="running") == 1
    assert gauge("merak_topology_ovn_chassis", state="registered") == 0
    sampler.forget("lab-1")
    assert gauge("merak_topology_ovn_chassis", state="running") is None
    assert not sampler.stats("lab-1").chassis


async def test_current_ends_with_a_sample_taken_now(ovn_central: RunningCentral, run_dir: Path) -> None:
    """Results asked for right after a chassis registered count it, whatever the sampling period."""
    sampler = ProcessSampler(run_dir / "stack-run")
    _describe(run_dir, 0, "mk-ps-host-0", ovn_central.sb)
    # Not being sampled (no supervision): stats as kept, none taken.
    assert not (await sampler.current("lab-1", run_dir)).chassis
    running = asyncio.create_task(sampler.run("lab-1", run_dir))
    try:
        deadline = time.monotonic() + 30
        while not sampler.stats("lab-1").chassis:
            assert time.monotonic() < deadline, "the sampler took no sample"
            await asyncio.sleep(0.02)
        assert sampler.stats("lab-1").chassis[-1].registered == 0
        _sbctl(ovn_central, "chassis-add", "mk-ps-host-0", "geneve", "127.0.0.1")
        try:
            stats = await sampler.current("lab-1", run_dir)
        finally:
            _sbctl(ovn_central, "chassis-del", "mk-ps-host-0")
        assert (stats.chassis[-1].registered, stats.chassis[-1].chassis) == (1, 1)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    count = len(sampler.stats("lab-1").chassis)
    await sampler.current("lab-1", run_dir)  # supervision ended: no more samples
    assert len(sampler.stats("lab-1").chassis) == count
