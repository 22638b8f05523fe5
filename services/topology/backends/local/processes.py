"""Faults on the control plane under test's processes: the stack's OVN central (its pid files under
`<state_dir>/run/`) and each emulated host's ovn-controller (under the topology's run directory,
`ovn/<vhost index>/`). A crash is SIGKILL (the stack's supervisor restarts a central process; a host's
ovn-controller stays down until healed, then its agent starts it again: EnsureChassis); a freeze is
SIGSTOP until healed (SIGCONT)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path

import grpc

from merak import ovs
from merak.errors import FailedPrecondition, Unavailable, from_rpc_error
from merak.grpcclient import ChannelPool
from merak.logs import get_logger
from merak.procs import pid_from_file, process_state
from merak.v1 import agent_pb2, agent_pb2_grpc, topology_pb2
from services.topology.metrics import TopologyMetrics

log = get_logger(__name__)

# The stack's component of each central process, and the program its pid must be.
CENTRAL = {"ovn-northd": "ovn-northd", "ovn-nb": "ovsdb-server", "ovn-sb": "ovsdb-server"}
HEAL_TIMEOUT = 30.0


class ProcessFaults:
    """Which processes each topology holds crashed or frozen, and how to make and heal that."""

    def __init__(self, stack_run_dir: Path) -> None:
        self.stack_run_dir = stack_run_dir
        self._held: dict[str, dict[str, int]] = {}  # topology id -> target -> HostState
        self._channels = ChannelPool()

    async def close(self) -> None:
        """Close the channels to agents."""
        await self._channels.close()

    def pid(self, target: str, run_dir: Path, vhost_index: Mapping[str, int]) -> int | None:
        """The pid of `ovn-northd`, `ovn-nb`, `ovn-sb` or `ovn-controller@<vhost>` (None: not running)."""
        process, _, vhost = target.partition("@")
        if process in CENTRAL:
            return pid_from_file(self.stack_run_dir / f"{process}.pid", CENTRAL[process])
        index = vhost_index.get(vhost)
        if index is None:
            return None
        return pid_from_file(run_dir / "ovn" / str(index) / "ovn-controller.pid", "ovn-controller")

    async def apply(
        self,
        topology_id: str,
        run_dir: Path,
        vhost_index: Mapping[str, int],
        endpoints: Mapping[str, str],
        states: Mapping[str, int],
    ) -> None:
        """Hold exactly `states` (target -> HostState): new ones are made, ones left out are healed."""
        held = self._held.setdefault(topology_id, {})
        for target, state in sorted(states.items()):
            if held.get(target) == state:
                continue
            if target in held:  # frozen -> crashed or back: heal first
                await self._heal(target, held.pop(target), run_dir, vhost_index, endpoints)
            pid = self.pid(target, run_dir, vhost_index)
            if pid is None:
                raise FailedPrecondition(f"{target} is not running (is the lab's network an ovn one?)")
            if state == topology_pb2.HOST_CRASHED:
                os.kill(pid, signal.SIGKILL)
            else:
                # The signal is delivered asynchronously: the fault holds once the process is stopped.
                os.kill(pid, signal.SIGSTOP)
                await _until(partial(_stopped, pid), target, "stop")
            held[target] = state
            log.info("process_fault_applied", topology_id=topology_id, target=target, pid=pid, state=state)
        for target in sorted(set(held) - set(states)):
            await self._heal(target, held.pop(target), run_dir, vhost_index, endpoints)
        if not held:
            self._held.pop(topology_id, None)

    async def _heal(
        self,
        target: str,
        state: int,
        run_dir: Path,
        vhost_index: Mapping[str, int],
        endpoints: Mapping[str, str],
    ) -> None:
        process, _, vhost = target.partition("@")
        if state == topology_pb2.HOST_FROZEN:
            pid = self.pid(target, run_dir, vhost_index)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                await _until(lambda: process_state(pid) not in ("T", "t"), target)
        elif process in CENTRAL:
            # The stack's supervisor restarts it (1 s after it died): wait until it runs again.
            await _until(lambda: self.pid(target, run_dir, vhost_index) is not None, target)
        else:
            endpoint = endpoints.get(vhost)
            if endpoint is None:
                raise FailedPrecondition(f"{target}: no agent serves vhost {vhost}")
            stub = agent_pb2_grpc.MerakAgentServiceStub(self._channels.channel(endpoint))
            try:  # an empty remote: the one the chassis had
                await stub.EnsureChassis(agent_pb2.EnsureChassisRequest(vhost=vhost), timeout=60)
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc, f"{target}: restart through its agent", endpoint) from exc
        log.info("process_fault_healed", target=target)

    def forget(self, topology_id: str) -> None:
        """The topology is gone: what it held went with it (its own processes), or is released."""
        for target, state in self._held.pop(topology_id, {}).items():
            if state == topology_pb2.HOST_FROZEN and target.partition("@")[0] in CENTRAL:
                pid = pid_from_file(self.stack_run_dir / f"{target}.pid", CENTRAL[target])
                if pid is not None and process_state(pid) in ("T", "t"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)


def _stopped(pid: int) -> bool:
    """The process is stopped (or gone)."""
    return process_state(pid) in ("T", "t", "")


async def _until(check: Callable[[], bool], target: str, what: str = "come back") -> None:
    deadline = time.monotonic() + HEAL_TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise Unavailable(f"{target} did not {what} within {HEAL_TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)


# What the control plane's processes are, by the pid files they keep: the stack's central
# (<state>/run/<component>.pid) and each chassis (<topology run dir>/ovn/<vhost index>/<daemon>.pid).
CENTRAL_GROUPS = {"ovn-northd": "northd", "ovn-nb": "nb", "ovn-sb": "sb"}
CHASSIS_GROUPS = {
    "ovn-controller": "ovn-controller",
    "ovs-vswitchd": "ovs-vswitchd",
    "ovsdb-server": "chassis-ovsdb",
}
SAMPLE_SECONDS = 1.0
KEEP_SAMPLES = 7200  # two hours at one a second
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_and_rss(pid: int) -> tuple[float, float] | None:
    """CPU seconds used so far and resident MiB of `pid` (None: gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS, pages * _PAGE / (1 << 20)


class ProcessSampler:
    """Samples, every SAMPLE_SECONDS while a topology is supervised, its OVN processes: the central's
    (only while the topology has chassis: a lab with OVN) and its chassis'; and how many of its chassis
    the southbound database lists. Keeps KEEP_SAMPLES; the last one is also a Prometheus gauge. Asked
    for its samples (`current`), it takes one more first: a caller right after a change sees it."""

    def __init__(self, stack_run_dir: Path, metrics: TopologyMetrics | None = None) -> None:
        self.stack_run_dir = stack_run_dir
        self.metrics = metrics
        self._samples: dict[str, dict[str, deque[topology_pb2.ProcessSample]]] = {}
        self._chassis: dict[str, deque[topology_pb2.ChassisSample]] = {}
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (when, CPU seconds)
        self._unreadable: set[str] = set()  # SB remotes whose failure was logged
        self._running: set[str] = set()  # topologies being sampled (run)
        self._lock = threading.Lock()  # run's samples and current's, each in a worker thread

    def pids(self, run_dir: Path) -> dict[str, list[int]]:
        """The live OVN processes of a topology's run directory, by group (nothing without chassis)."""
        chassis = sorted(run_dir.glob("ovn/*/"))
        if not chassis:
            return {}
        groups: dict[str, list[int]] = {}
        for component, group in CENTRAL_GROUPS.items():
            pid = pid_from_file(self.stack_run_dir / f"{component}.pid", CENTRAL[component])
            if pid is not None:
                groups.setdefault(group, []).append(pid)
        for root in chassis:
            for daemon, group in CHASSIS_GROUPS.items():
                pid = pid_from_file(root / f"{daemon}.pid", daemon)
                if pid is not None:
                    groups.setdefault(group, []).append(pid)
        return groups

    def sample(self, topology_id: str, run_dir: Path, now: float | None = None) -> None:
        """One sample of every group of the topology, and of its chassis in SB."""
        with self._lock:
            self._sample(topology_id, run_dir, time.time() if now is None else now)

    def _sample(self, topology_id: str, run_dir: Path, now: float) -> None:
        kept = self._samples.setdefault(topology_id, {})
        for group, pids in self.pids(run_dir).items():
            cores = rss = 0.0
            alive = 0
            for pid in pids:
                used = _cpu_and_rss(pid)
                if used is None:
                    continue
                cpu, resident = used
                alive += 1
                rss += resident
                before = self._last.get(pid)
                if before is not None and now > before[0]:
                    cores += max(0.0, cpu - before[1]) / (now - before[0])
                self._last[pid] = (now, cpu)
            series = kept.setdefault(group, deque(maxlen=KEEP_SAMPLES))
            sample = topology_pb2.ProcessSample(
                at=now, cpu_cores=round(cores, 3), rss_mib=round(rss, 1), processes=alive
            )
            series.append(sample)
            if self.metrics is not None:
                self.metrics.process_cpu_cores.labels(topology_id, group).set(sample.cpu_cores)
                self.metrics.process_rss_bytes.labels(topology_id, group).set(rss * (1 << 20))
                self.metrics.processes.labels(topology_id, group).set(alive)
        counted = self.registered(run_dir)
        if counted is not None:
            registered, chassis = counted
            self._chassis.setdefault(topology_id, deque(maxlen=KEEP_SAMPLES)).append(
                topology_pb2.ChassisSample(at=now, registered=registered, chassis=chassis)
            )
            if self.metrics is not None:
                self.metrics.chassis.labels(topology_id, "running").set(chassis)
                self.metrics.chassis.labels(topology_id, "registered").set(registered)

    def registered(self, run_dir: Path) -> tuple[int, int] | None:
        """(chassis the southbound database lists, chassis the topology's hosts run), read from each
        chassis's `chassis.json` and SB's Chassis table (one read per SB). Chassis whose SB cannot be
        read are left out; None without chassis or when no SB could be read (a frozen or crashed SB
        leaves a gap rather than a zero)."""
        by_remote: dict[str, set[str]] = {}
        for path in run_dir.glob(f"ovn/*/{ovs.CHASSIS_FILE}"):
            try:
                described = json.loads(path.read_text())
                by_remote.setdefault(str(described["sb_remote"]), set()).add(str(described["system_id"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being written, or its chassis is being removed
        if not by_remote:
            return None
        registered = running = 0
        read = False
        for remote, names in by_remote.items():
            try:
                listed = ovs.select_column(remote, "OVN_Southbound", "Chassis", "name", timeout=0.5)
            except (OSError, ValueError) as exc:
                if remote not in self._unreadable:
                    self._unreadable.add(remote)
                    log.info("chassis_sb_unreadable", remote=remote, error=str(exc)[:200])
                continue
            self._unreadable.discard(remote)
            read = True
            registered += len(names & {str(name) for name in listed})
            running += len(names)
        if not read:
            return None
        return registered, running

    async def run(self, topology_id: str, run_dir: Path) -> None:
        """Sample until cancelled (the topology's supervision ends)."""
        self._running.add(topology_id)
        try:
            while True:
                await asyncio.to_thread(self.sample, topology_id, run_dir)
                await asyncio.sleep(SAMPLE_SECONDS)
        finally:
            self._running.discard(topology_id)

    async def current(
        self, topology_id: str, run_dir: Path, since: float = 0.0
    ) -> topology_pb2.ProcessStatsReply:
        """`stats`, ending with a sample taken now while the topology is sampled: results asked for
        right after a chassis came up count it, rather than what the last period saw (a run shorter
        than SAMPLE_SECONDS would otherwise miss it)."""
        if topology_id in self._running:
            await asyncio.to_thread(self.sample, topology_id, run_dir)
        return self.stats(topology_id, since)

    def stats(self, topology_id: str, since: float = 0.0) -> topology_pb2.ProcessStatsReply:
        """The samples kept from `since` (unix seconds) on, per group, and the chassis in SB."""
        reply = topology_pb2.ProcessStatsReply()
        for group, series in sorted(self._samples.get(topology_id, {}).items()):
            reply.groups.add(group=group, samples=[s for s in series if s.at >= since])
        reply.chassis.extend(s for s in self._chassis.get(topology_id, ()) if s.at >= since)
        return reply

    def forget(self, topology_id: str) -> None:
        """The topology is gone: its samples and gauges too."""
        groups = self._samples.pop(topology_id, {})
        self._chassis.pop(topology_id, None)
        if self.metrics is None:
            return
        gauges = (self.metrics.process_cpu_cores, self.metrics.process_rss_bytes, self.metrics.processes)
        for group in groups:
            for gauge in gauges:
                with contextlib.suppress(KeyError):
                    gauge.remove(topology_id, group)
        for state in ("running", "registered"):
            with contextlib.suppress(KeyError):
                self.metrics.chassis.remove(topology_id, state)
