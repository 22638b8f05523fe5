"""The e2e tests' stack: one real local stack (processes) for the session, on ports of its own."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from merak_tools.localstack import LocalStack, StackSettings, quiet_port
from tests.support import stack_port_offset


@pytest.fixture(scope="session")
def stack() -> Iterator[StackSettings]:
    """A stack of its own: a short state directory and ports shifted away from a user's stack."""
    state = Path(tempfile.mkdtemp(prefix="mke", dir="/tmp"))
    settings = StackSettings(
        state_dir=state,
        port_offset=stack_port_offset(12000),  # 10000-11990 is test_localstack's
        redis_port=quiet_port(),
        temporal_port=quiet_port(),
        temporal_ui_port=quiet_port(),
        # The Alcor stand-in of test_merak_clients, on Alcor's NodePorts at a loopback address of its own.
        control_plane_allow="127.0.0.93:30001-30008",
    )
    local = LocalStack(settings, out=lambda _line: None)
    try:
        local.up()
        yield settings
    finally:
        local.down()
        shutil.rmtree(state, ignore_errors=True)
