"""OVN central as a set of child processes: the real NB and SB ovsdb-servers and ovn-northd under one
directory, on unix sockets, for the tests and the benchmarks that need an OVN of their own (the local
stack runs the same programs as supervised components)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from merak import ovs

__all__ = ["RunningCentral"]


class RunningCentral:
    """NB (and, unless `nb_only`, SB and northd) running under `root` until `stop()`."""

    def __init__(self, root: Path, *, nb_only: bool = False) -> None:
        self.central = ovs.Central(root)
        self.nb_only = nb_only
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def nb(self) -> str:
        """The NB remote (unix socket)."""
        return self.central.remote("nb")

    @property
    def sb(self) -> str:
        """The SB remote (unix socket)."""
        return self.central.remote("sb")

    def start(self, timeout: float = 20.0) -> None:
        """Start the processes and wait until their sockets answer."""
        self.central.prepare()
        kinds = ["nb"] if self.nb_only else ["nb", "sb"]
        env = {**os.environ, **self.central.env}
        for kind in kinds:
            self.procs.append(subprocess.Popen(self.central.server_argv(kind), env=env))
        if not self.nb_only:
            self.procs.append(subprocess.Popen(self.central.northd_argv(), env=env))
        deadline = time.monotonic() + timeout
        for kind in kinds:
            while not self._answers(kind):
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"OVN {kind} ovsdb-server did not answer within {timeout} s")
                time.sleep(0.05)

    def _answers(self, kind: str) -> bool:
        if not self.central.socket(kind).exists():
            return False
        name = "OVN_Northbound" if kind == "nb" else "OVN_Southbound"
        done = subprocess.run(
            [ovs.program("ovsdb-client"), "list-dbs", self.central.remote(kind)],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return name in done.stdout

    def stop(self) -> None:
        """Stop every process this object started (SIGTERM, then SIGKILL)."""
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()

    def nbctl(self, *args: str) -> str:
        """`ovn-nbctl` against this NB (for checks a test makes from outside the product)."""
        done = subprocess.run(
            [ovs.program("ovn-nbctl"), f"--db={self.nb}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stdout
