"""CPU and memory of OVN's processes over a run, sampled from /proc: northd, the NB and SB servers (one
ovsdb-server each, told apart by their database) and the chassis (ovn-controller, ovs-vswitchd and
their ovsdb-server, summed over every chassis), for the processes whose command line names `root`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bench.periodic import Periodic

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _group(cmdline: list[str]) -> str | None:
    """Which part of OVN a process is ("" when none)."""
    program = os.path.basename(cmdline[0]) if cmdline else ""
    if program == "ovn-northd":
        return "northd"
    if program == "ovn-controller":
        return "ovn-controller"
    if program == "ovs-vswitchd":
        return "ovs-vswitchd"
    if program == "ovsdb-server":
        text = " ".join(cmdline)
        if "ovnnb_db" in text:
            return "nb"
        if "ovnsb_db" in text:
            return "sb"
        return "chassis-ovsdb"
    return None


@dataclass
class ProcessUse:
    """What one group of processes used: CPU seconds over the run, peak RSS (summed over the group)."""

    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    processes: int = 0


@dataclass
class OvnProcesses:
    """Samples the OVN processes under `root` every `interval` while the block runs."""

    root: Path
    interval: float = 0.5
    use: dict[str, ProcessUse] = field(default_factory=dict)
    _cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    _first: dict[int, float] = field(default_factory=dict)
    _ticks: Periodic | None = None

    def _sample(self) -> None:
        mark = str(self.root).encode()
        rss: dict[str, float] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
                if mark not in raw:
                    continue
                group = _group([part.decode(errors="replace") for part in raw.split(b"\0") if part])
                if group is None:
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                pages = int((entry / "statm").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
            pid = int(entry.name)
            cpu = (int(fields[11]) + int(fields[12])) / TICKS
            self._first.setdefault(pid, cpu)
            self._cpu[pid] = (group, cpu)
            rss[group] = rss.get(group, 0.0) + pages * PAGE / (1 << 20)
        for group, mib in rss.items():
            use = self.use.setdefault(group, ProcessUse())
            use.peak_rss_mib = max(use.peak_rss_mib, mib)

    def __enter__(self) -> OvnProcesses:
        self._sample()
        self._ticks = Periodic(self.interval, self._sample, "ovn-processes").start()
        return self

    def __exit__(self, *_: object) -> None:
        if self._ticks is not None:
            self._ticks.stop()
        self._sample()
        for pid, (group, cpu) in self._cpu.items():
            use = self.use.setdefault(group, ProcessUse())
            use.cpu_seconds += cpu - self._first.get(pid, cpu)
            use.processes += 1

    def summary(self, seconds: float) -> dict[str, dict[str, float]]:
        """Per group: CPU seconds, the share of one core over `seconds`, peak RSS in MiB, processes."""
        return {
            group: {
                "cpu_seconds": round(use.cpu_seconds, 2),
                "cores": round(use.cpu_seconds / seconds, 2) if seconds else 0.0,
                "peak_rss_mib": round(use.peak_rss_mib, 1),
                "processes": use.processes,
            }
            for group, use in sorted(self.use.items())
        }
