"""Is a pid still the process we started? (Pids are recycled; /proc tells.)"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def process_state(pid: int) -> str:
    """The one-letter state of a process (R, S, T, Z, …); "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return ""


def alive(pid: int) -> bool:
    """True while `pid` runs; an exited, not yet reaped process (zombie) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = process_state(pid)
    if not state:
        return False
    if state == "Z":  # its parent (often init, which may reap late) has not reaped it yet
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return False
    return True


def is_ours(pid: int, marker: str) -> bool:
    """True when `pid` runs and its command line contains `marker` (so a recycled pid is not ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return False
    return alive(pid) and (not marker or marker in cmdline)


def pid_from_file(pid_file: Path, marker: str) -> int | None:
    """The pid written in `pid_file` if that process still runs and is ours, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if is_ours(pid, marker) else None
