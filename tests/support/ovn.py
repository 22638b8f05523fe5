"""OVN central started by a test: the real NB and SB ovsdb-servers and ovn-northd, in a temporary
directory, on unix sockets (no mock of OVN). Tests skip with the reason when OVN is not installed."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from merak import ovs
from merak_tools.ovncentral import RunningCentral


def skip_without_ovn() -> None:
    """Skip the calling test, naming what is missing, when OVS/OVN cannot run here."""
    gone = ovs.missing()
    if gone:
        pytest.skip(f"OVN/OVS not installed (make install installs them): missing {', '.join(gone)}")


@contextlib.contextmanager
def running_central(*, nb_only: bool = False) -> Iterator[RunningCentral]:
    """OVN central in a short temporary directory (unix socket paths are limited to 107 bytes),
    stopped and removed at the end."""
    skip_without_ovn()
    root = Path(tempfile.mkdtemp(prefix="mk-ovn-", dir="/tmp"))
    running = RunningCentral(root, nb_only=nb_only)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ovn_nb() -> Iterator[RunningCentral]:
    """A real NB ovsdb-server of the test's own (no SB, no northd)."""
    with running_central(nb_only=True) as running:
        yield running


@pytest.fixture
def ovn_central() -> Iterator[RunningCentral]:
    """A real OVN central of the test's own: NB, SB and northd."""
    with running_central() as running:
        yield running
