"""The machine a benchmark ran on, as the results file describes it: CPUs, memory, kernel, date, and
whether anything else used the CPUs meanwhile (`OtherLoad`)."""

from __future__ import annotations

import datetime
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.periodic import Periodic
from merak.capacity import meminfo

TICKS = os.sysconf("SC_CLK_TCK")
PF_KTHREAD = 0x00200000
# Other processes using a quarter of a core over a sampling interval, or a tenth on average over the
# run, are other load: a benchmark beside them measures the machine shared.
SEEN_PEAK_CORES = 0.25
SEEN_MEAN_CORES = 0.1


def cpu_model() -> str:
    """The CPU's model name, from /proc/cpuinfo ("" when it does not say)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def describe() -> dict[str, Any]:
    """CPUs, their model, memory, kernel and the time now (UTC)."""
    return {
        "cpus": os.cpu_count() or 0,
        "cpu_model": cpu_model(),
        "memory_gib": round(meminfo().get("MemTotal", 0) / 2**30, 1),
        "kernel": platform.release(),
        "hostname": platform.node(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


@dataclass(frozen=True, slots=True)
class ProcessStat:
    """What /proc/<pid>/stat says of a process, as far as the load goes."""

    parent: int
    name: str
    cpu: float  # seconds of user and system time so far
    kernel_thread: bool


def processes_now() -> dict[int, ProcessStat]:
    """Every process now, from /proc/<pid>/stat."""
    found: dict[int, ProcessStat] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # gone
        name, rest = raw[raw.index("(") + 1 : raw.rindex(")")], raw[raw.rindex(")") + 2 :].split()
        # After the name: state, ppid, pgrp, session, tty, tpgid, flags, 4 fault counts, utime, stime.
        found[int(entry.name)] = ProcessStat(
            parent=int(rest[1]),
            name=name,
            cpu=(int(rest[11]) + int(rest[12])) / TICKS,
            kernel_thread=bool(int(rest[6]) & PF_KTHREAD),
        )
    return found


def descendants(root: int, processes: dict[int, ProcessStat]) -> set[int]:
    """`root` and every process below it (children, theirs, …)."""
    children: dict[int, list[int]] = {}
    for pid, process in processes.items():
        children.setdefault(process.parent, []).append(pid)
    ours, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in ours:
                ours.add(child)
                todo.append(child)
    return ours


@dataclass
class OtherLoad:
    """CPU used by processes that are not this benchmark's (this process and its descendants, the stacks
    and agents it starts included; kernel threads left out), sampled every `interval` seconds while the
    block runs."""

    interval: float = 5.0
    cpu_seconds: float = 0.0
    peak_cores: float = 0.0
    seconds: float = 0.0
    by_name: dict[str, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _last_at: float = 0.0
    _ticks: Periodic | None = None

    def _others(self) -> dict[int, ProcessStat]:
        processes = processes_now()
        ours = descendants(os.getpid(), processes)
        return {pid: p for pid, p in processes.items() if pid not in ours and not p.kernel_thread}

    def _sample(self) -> None:
        others = self._others()
        used = 0.0
        for pid, process in others.items():
            # A process that started since the last sample counts from its start.
            spent = process.cpu - self._last.get(pid, 0.0)
            used += spent
            self.by_name[process.name] = self.by_name.get(process.name, 0.0) + spent
        now = time.monotonic()
        elapsed, self._last_at = now - self._last_at, now
        self._last = {pid: p.cpu for pid, p in others.items()}
        self.cpu_seconds += used
        self.seconds += elapsed
        if elapsed >= self.interval / 2:  # a short last stretch says little about a peak
            self.peak_cores = max(self.peak_cores, used / elapsed)

    def __enter__(self) -> OtherLoad:
        self._last = {pid: p.cpu for pid, p in self._others().items()}
        self._last_at = time.monotonic()
        self._ticks = Periodic(self.interval, self._sample, "other-load").start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._ticks is not None:
            self._ticks.stop()
        self._sample()

    @property
    def mean_cores(self) -> float:
        """Cores the other processes used on average."""
        return self.cpu_seconds / self.seconds if self.seconds else 0.0

    @property
    def seen(self) -> bool:
        """Whether other load was seen."""
        return self.peak_cores >= SEEN_PEAK_CORES or self.mean_cores >= SEEN_MEAN_CORES

    def summary(self) -> dict[str, Any]:
        """For the results file: whether it was seen, how much, and the busiest other programs."""
        return {
            "seen": self.seen,
            "mean_cores": round(self.mean_cores, 2),
            "peak_cores": round(self.peak_cores, 2),
            "busiest": {
                name: round(cpu, 1)
                for name, cpu in sorted(self.by_name.items(), key=lambda item: -item[1])[:3]
                if cpu >= 1.0
            },
            "sampled_seconds": round(self.seconds),
        }


def _when(iso: str) -> str:
    try:
        moment = datetime.datetime.fromisoformat(iso).astimezone(datetime.UTC)
    except ValueError:
        return iso or "an unknown date"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def sentence(machine: dict[str, Any]) -> str:
    """A results file's machine in words: when, the CPUs, memory, kernel, and the other load seen."""
    load: dict[str, Any] = machine.get("other_load", {})
    if not load:
        other = "other load not sampled"
    elif load.get("seen"):
        busiest = ", ".join(load.get("busiest", {}))
        other = (
            f"other load seen: {load.get('mean_cores', 0):g} cores on average, {load.get('peak_cores', 0):g} "
            "at most" + (f" ({busiest})" if busiest else "")
        )
    else:
        other = "no other load seen"
    return (
        f"on {_when(str(machine.get('date', '')))}, {machine.get('cpus', '?')} CPUs "
        f"({machine.get('cpu_model') or 'model unknown'}), {machine.get('memory_gib', '?')} GiB, "
        f"Linux {machine.get('kernel', '?')}; {other}"
    )
