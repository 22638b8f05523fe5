"""An agent on a unix socket admits a group when told (MERAK_SOCKET_GROUP): root:<gid>, mode 0660, so a
worker that is not root reaches it; without it, the socket is as gRPC made it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.agent.app import build
from services.agent.config import AgentSettings

pytestmark = pytest.mark.root


@pytest.mark.parametrize("group", [10001, -1])
async def test_the_socket_admits_the_group_it_is_given(tmp_path: Path, group: int) -> None:
    socket = tmp_path / "agent.sock"
    settings = AgentSettings(
        listen=f"unix://{socket}", metrics_port=-1, socket_group=group, state_dir=tmp_path
    )
    built = await build(settings)
    try:
        await built.server.start()
        assert built.on_started is not None
        await built.on_started()
        mode = socket.stat()
        if group >= 0:
            assert (mode.st_gid, stat.S_IMODE(mode.st_mode)) == (group, 0o660)
        else:
            assert mode.st_gid == os.getgid()  # the agent's own group, nobody else's
    finally:
        await built.server.stop(0)
        await built.teardown.run()
