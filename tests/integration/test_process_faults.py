"""Faults on OVN central's processes (the local backend's ProcessFaults) against a real central started by
the test: a freeze stops northd until healed; a crash kills the NB server, and the heal waits until the
stack's supervisor (here: the test) has started it again."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from merak import ovs
from merak.errors import FailedPrecondition
from merak.procs import alive, process_state
from merak.v1 import topology_pb2
from merak_tools.ovncentral import RunningCentral
from services.topology.backends.local.processes import ProcessFaults
from tests.support import assert_eventually

pytestmark = pytest.mark.root


@pytest.fixture
def run() -> Iterator[Path]:
    """The stack's run directory of the test: pid files of the central's processes."""
    root = Path(tempfile.mkdtemp(prefix="mk-pf-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _restart_nb(central: RunningCentral, run: Path) -> None:
    """What the stack's supervisor does after a death: the NB server again, its pid file rewritten."""
    again = subprocess.Popen(central.central.server_argv("nb"), env={**os.environ, **central.central.env})
    central.procs.append(again)
    (run / "ovn-nb.pid").write_text(f"{again.pid}\n")


async def test_freeze_and_crash_central_processes(ovn_central: RunningCentral, run: Path) -> None:
    procs = {
        "ovn-nb": ovn_central.procs[0],
        "ovn-sb": ovn_central.procs[1],
        "ovn-northd": ovn_central.procs[2],
    }
    for name, proc in procs.items():
        (run / f"{name}.pid").write_text(f"{proc.pid}\n")
    faults = ProcessFaults(run)
    try:
        northd = procs["ovn-northd"].pid
        await faults.apply("t1", run, {}, {}, {"ovn-northd": topology_pb2.HOST_FROZEN})
        assert process_state(northd) in ("T", "t")
        # A frozen northd binds nothing: a switch made now gets no datapath in SB until the heal.
        ovn_central.nbctl("ls-add", "pf-sw")
        await faults.apply("t1", run, {}, {}, {})
        assert process_state(northd) not in ("T", "t", "")
        await assert_eventually(
            lambda: (
                "pf-sw" in _sb(ovn_central.sb, "--bare", "--columns=external_ids", "list", "Datapath_Binding")
            ),
            timeout=20,
        )
        nb = procs["ovn-nb"].pid
        await faults.apply("t1", run, {}, {}, {"ovn-nb": topology_pb2.HOST_CRASHED})
        await assert_eventually(lambda: not alive(nb), timeout=10)
        procs["ovn-nb"].wait(timeout=10)

        async def supervisor() -> None:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(_restart_nb, ovn_central, run)

        restarted = asyncio.create_task(supervisor())
        await faults.apply("t1", run, {}, {}, {})  # the heal returns once it runs again
        await restarted
        assert faults.pid("ovn-nb", run, {}) is not None
        with pytest.raises(FailedPrecondition, match="not running"):
            await faults.apply(
                "t1", run, {"vhost-0": 0}, {}, {"ovn-controller@vhost-0": topology_pb2.HOST_FROZEN}
            )
    finally:
        await faults.close()


def _sb(remote: str, *args: str) -> str:
    return subprocess.run(
        [ovs.program("ovn-sbctl"), f"--db={remote}", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
