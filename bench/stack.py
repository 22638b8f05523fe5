"""A private local stack for a benchmark: its own state directory and ports, as `merak up` makes one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.periodic import Periodic
from merak.capacity import meminfo
from merak_tools.localstack import LocalStack, StackSettings, quiet_port


def private_stack(
    prefix: str, base_offset: int, control_plane_allow: str = ""
) -> tuple[LocalStack, StackSettings]:
    """A stack (not started) in a fresh /tmp directory, its gRPC ports shifted from `base_offset`; it may
    reach the control-plane endpoints in `control_plane_allow` besides its own (MERAK_CONTROL_PLANE_ALLOW)."""
    settings = StackSettings(
        control_plane_allow=control_plane_allow,
        state_dir=Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp")),
        port_offset=base_offset + (os.getpid() % 400) * 10,
        redis_port=quiet_port(),
        temporal_port=quiet_port(),
        temporal_ui_port=quiet_port(),
    )
    return LocalStack(settings, out=lambda _line: None), settings


def teste2e_argv(settings: StackSettings, report: str, kept: Path | None = None) -> list[str]:
    """teste2e's arguments that point it at the stack, its report path in the stack's state directory, or
    `kept` (a JSON path the user keeps, its HTML page beside it). `main_async` writes no report: a caller
    that wants one calls `teste2e.write_reports`."""
    where = ["--report", str(settings.state_dir / report)]
    if kept is not None:
        where = ["--report", str(kept), "--html", str(kept.with_suffix(".html"))]
    return [
        "--scenario-address", f"localhost:{settings.grpc_port('scenario')}",
        "--topology-address", f"localhost:{settings.grpc_port('topology')}",
        "--compute-address", f"localhost:{settings.grpc_port('compute')}",
        *where,
    ]  # fmt: skip


def _stack_pids(state_dir: Path) -> list[int]:
    """Processes of the stack in `state_dir`: its path on their command line or in their environment, and
    those its pid files name. Redis rewrites its command line ("redis-server 127.0.0.1:<port>") and its
    environment is not readable the same way: found by the command line alone, a million VMs' Redis
    (~0.6 GiB) was left out of the stack's memory until 2026-12-07."""
    mark, env_mark = str(state_dir).encode(), f"MERAK_STATE_DIR={state_dir}".encode()
    pids: list[int] = []
    for pid_file in (state_dir / "run").glob("*.pid"):
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if Path(f"/proc/{pid}").exists():
            pids.append(pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(entry.name) in pids:
                continue
            if mark in (entry / "cmdline").read_bytes() or env_mark in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue  # gone, or not ours to read
    return pids


def _rss_kib(pid: int) -> int:
    return _field_kib(f"/proc/{pid}/status", "VmRSS:")


def _pss_kib(pid: int) -> int:
    """The process's proportional share of the memory it maps: a page shared by n processes counts 1/n
    in each (the stack's sum counts it once, unlike RSS: Redis's append-only-file rewrite, a fork, had
    Redis's whole memory counted twice by a sum of RSS while it ran)."""
    return _field_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def _field_kib(path: str, field: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _available_kib() -> int:
    return meminfo().get("MemAvailable", 0) // 1024


class MemorySampler:
    """Peak memory while a block runs: the stack's processes (PSS summed: their memory, each shared page
    once; the RSS sum, which counts shared pages once per process, beside it) and the machine's (what
    MemAvailable lost since the start: kernel objects of real VMs included). Sampled every second."""

    def __init__(self, state_dir: Path, interval: float = 1.0) -> None:
        self.state_dir = state_dir
        self.interval = interval
        self.peak_rss_kib = 0
        self.peak_pss_kib = 0
        self.peak_used_kib = 0
        self._start_available = 0
        self._ticks = Periodic(interval, self._sample, "memory-sampler")

    def _sample(self) -> None:
        pids = _stack_pids(self.state_dir)
        self.peak_rss_kib = max(self.peak_rss_kib, sum(_rss_kib(p) for p in pids))
        self.peak_pss_kib = max(self.peak_pss_kib, sum(_pss_kib(p) for p in pids))
        self.peak_used_kib = max(self.peak_used_kib, self._start_available - _available_kib())

    def __enter__(self) -> MemorySampler:
        self._start_available = _available_kib()
        self._ticks.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._ticks.stop()
