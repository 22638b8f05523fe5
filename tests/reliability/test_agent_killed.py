"""A vhost's agent that dies is restarted: INFO says why the vhost is not READY meanwhile, and the
vhost is READY again after; a DELETE stops the supervisor first, so nothing is restarted after it."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from merak import netns
from merak.naming import topology_short_id
from merak.v1 import common_pb2, topology_pb2
from services.topology.backends.local import ns_prefix
from services.topology.manager import TopologyManager
from tests.stack import ServiceStack
from tests.support import assert_eventually, unique_name

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _agents(run_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if "services.agent" in line]


async def _nodes(topology: TopologyManager, topology_id: str) -> list[common_pb2.InternalComputeInfo]:
    return list((await topology.info(topology_id)).compute_nodes)


async def test_a_killed_agent_is_restarted_and_its_vhost_says_why_meanwhile(services: ServiceStack) -> None:
    topology = await services.topology(max_agents=4)
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=unique_name("ak-"),
        topology_type=topology_pb2.TREE,
        number_of_vhosts=4,
        vhost_per_rack=4,
        ports_per_vswitch=4,
        data_plane_cidr="10.222.0.0/24",
    )
    await topology.create(config)
    topology_id = config.topology_id

    async def all_ready() -> list[common_pb2.InternalComputeInfo] | None:
        nodes = await _nodes(topology, topology_id)
        return nodes if all(n.status == common_pb2.READY for n in nodes) else None

    try:
        nodes: list[common_pb2.InternalComputeInfo] = await assert_eventually(
            all_ready, timeout=60, message="topology ready"
        )
        victim = nodes[1]
        pid_file = Path(victim.agent_endpoint.removeprefix("unix://")).with_suffix(".pid")
        old_pid = int(pid_file.read_text())
        os.kill(old_pid, signal.SIGKILL)

        async def reported() -> str | None:
            node = next(n for n in await _nodes(topology, topology_id) if n.name == victim.name)
            down = node.status == common_pb2.ERROR and "restarting" in node.status_detail
            return node.status_detail if down else None

        detail: str = await assert_eventually(reported, timeout=10, message="the dead agent reported")
        assert detail.startswith("agent killed by SIGKILL; restarting in 1s"), detail
        restarted: list[common_pb2.InternalComputeInfo] = await assert_eventually(
            all_ready, timeout=60, message="the agent restarted"
        )
        assert [n.status_detail for n in restarted] == [""] * 4
        assert int(pid_file.read_text()) != old_pid
        assert len(_agents(services.run_dir)) == 4
    finally:
        await topology.delete(topology_id)
    assert netns.list_names(ns_prefix(topology_short_id(topology_id))) == []
    assert _agents(services.run_dir) == []
