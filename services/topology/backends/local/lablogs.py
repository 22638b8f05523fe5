"""A lab's logs outlive it: on DELETE, its agents' logs (`agent-<k>.log`) and its OVN chassis' daemon logs
(`ovn/<vhost index>/{ovsdb-server,ovs-vswitchd,ovn-controller}.log`) leave the topology's run directory,
which goes with the lab, for `<root>/<UTC time>-<short id>/` (e.g. `20261206T190512Z-3f9a1c/`), laid out
as they were. The `keep` newest such directories stay; older ones are removed at the next DELETE.

The topology service's root is `<state_dir>/logs/labs` (`MERAK_LAB_LOG_DIR`): beside the stack's own logs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from merak.logs import get_logger

log = get_logger(__name__)

# A lab's directory: its UTC deletion time first (names sort in time order), then its short id, then a
# counter when the same lab went twice within a second.
LAB_DIR = re.compile(r"^\d{8}T\d{6}Z-[0-9a-z]+(-\d+)?$")
CHASSIS_LOGS = "ovn/*/*.log"
AGENT_LOGS = "agent-*.log"


@dataclass(frozen=True, slots=True)
class LabLogs:
    """Where deleted labs' logs are kept, and how many labs' worth."""

    root: Path
    keep: int = 20

    def begin(self, short_id: str, run_dir: Path, now: datetime | None = None) -> Path | None:
        """Make the lab's directory and hold on to its chassis' logs before its agents stop (an agent that
        stops its chassis removes the chassis' files): hard links, so what the daemons write until they
        exit is kept too; copies when the log directory is on another file system. None: nothing kept
        (`keep` is 0, or the run directory is gone)."""
        if self.keep <= 0 or not run_dir.is_dir():
            return None
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        self.root.mkdir(parents=True, exist_ok=True)
        kept = self.root / f"{stamp}-{short_id}"
        for attempt in range(2, 1000):
            try:
                kept.mkdir()
                break
            except FileExistsError:
                kept = self.root / f"{stamp}-{short_id}-{attempt}"
        for path in sorted(run_dir.glob(CHASSIS_LOGS)):
            target = kept / path.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except FileNotFoundError:
                continue  # its chassis was just removed
            except OSError:
                with contextlib.suppress(FileNotFoundError):
                    shutil.copy2(path, target)
        return kept

    def finish(self, kept: Path, run_dir: Path) -> int:
        """Move the agents' logs (their agents have stopped) into `kept`, then remove the oldest labs'
        directories beyond `keep`; how many files `kept` holds (an empty one is removed)."""
        for path in sorted(run_dir.glob(AGENT_LOGS)):
            with contextlib.suppress(FileNotFoundError):
                shutil.move(path, kept / path.name)
        files = sum(1 for path in kept.rglob("*") if path.is_file())
        if not files:
            shutil.rmtree(kept, ignore_errors=True)
        self.rotate()
        return files

    def labs(self) -> list[Path]:
        """The kept labs' directories, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if LAB_DIR.match(p.name) and p.is_dir())

    def rotate(self) -> list[Path]:
        """Remove the oldest labs' directories beyond `keep`; those removed."""
        labs = self.labs()
        gone = labs[: max(0, len(labs) - self.keep)]
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
        if gone:
            log.info("lab_logs_rotated", removed=len(gone), kept=len(labs) - len(gone), root=str(self.root))
        return gone
