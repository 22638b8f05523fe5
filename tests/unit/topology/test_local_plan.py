"""How the local backend lays a topology's vhosts out among agent processes, and what it tells each."""

from __future__ import annotations

from pathlib import Path

import pytest

from merak import vhostsfile
from merak.errors import FailedPrecondition
from merak.v1 import topology_pb2
from services.topology.backends.local import LocalBackend, ns_name, vm_ns_prefix
from services.topology.backends.local.agents import _serves, check_socket_paths
from services.topology.backends.vhosts import vhosts_file
from services.topology.generator import generate, spec_from_proto
from services.topology.models import Topology, vhost_mac


def tree(vhosts: int, dataplane: str = "real") -> Topology:
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id="plan-1",
        topology_type=topology_pb2.TREE,
        number_of_vhosts=vhosts,
        number_of_racks=0,
        vhost_per_rack=4,
        ports_per_vswitch=4,
        data_plane_cidr="10.200.0.0/16",
        dataplane=dataplane,
    )
    return generate(spec_from_proto(config))


def backend(tmp_path: Path, max_agents: int, per_agent: int = 25_000) -> LocalBackend:
    return LocalBackend(tmp_path, max_agents=max_agents, fake_vhosts_per_agent=per_agent, workers=1)


async def test_few_real_vhosts_get_an_agent_each_inside_their_namespace(tmp_path: Path) -> None:
    local = backend(tmp_path, max_agents=16)
    try:
        topology = tree(3)
        plans = local.plan_agents(topology)
        short = topology.spec.short_id
        assert [p.vhosts for p in plans] == [("vhost-0",), ("vhost-1",), ("vhost-2",)]
        assert [p.netns for p in plans] == [ns_name(short, f"vhost-{i}") for i in range(3)]
        assert {p.run_dir for p in plans} == {tmp_path / short}
    finally:
        await local.close()


async def test_past_max_agents_real_vhosts_share_agents_in_contiguous_groups(tmp_path: Path) -> None:
    local = backend(tmp_path, max_agents=4)
    try:
        plans = local.plan_agents(tree(5))
        assert [p.vhosts for p in plans] == [("vhost-0", "vhost-1"), ("vhost-2", "vhost-3"), ("vhost-4",)]
        assert {p.netns for p in plans} == {""}  # a shared agent runs on this machine
    finally:
        await local.close()


async def test_fake_vhosts_are_packed_by_vhosts_per_agent_and_never_get_a_namespace(tmp_path: Path) -> None:
    local = backend(tmp_path, max_agents=16, per_agent=2)
    try:
        plans = local.plan_agents(tree(5, "fake"))
        assert [len(p.vhosts) for p in plans] == [2, 2, 1]
        assert {p.netns for p in plans} == {""}
        one = backend(tmp_path / "one", max_agents=16, per_agent=1)
        try:
            assert {p.netns for p in one.plan_agents(tree(2, "fake"))} == {""}
        finally:
            await one.close()
    finally:
        await local.close()


def test_the_vhosts_file_says_what_an_agent_serves(tmp_path: Path) -> None:
    topology = tree(3)
    short = topology.spec.short_id
    document = vhosts_file(topology, [(2, topology.node("vhost-2"))])
    vhostsfile.write(tmp_path / "agent-0.json", document)
    read = vhostsfile.read(tmp_path / "agent-0.json")
    assert read == document
    assert (read.topology_id, read.short_id, read.dataplane) == ("plan-1", short, "real")
    vhost = read.vhosts[0]
    assert (vhost.name, vhost.index, vhost.netns, vhost.vm_ns_prefix) == (
        "vhost-2",
        2,
        ns_name(short, "vhost-2"),
        vm_ns_prefix(short, 2),
    )
    assert (vhost.datapath_ip, vhost.prefix_len, vhost.mac) == (
        topology.datapath_ip("vhost-2"),
        16,
        vhost_mac(short, 2),
    )
    assert vhost.nic == topology.node("vhost-2").nics[0].name
    fake = tree(3, "fake")
    assert vhosts_file(fake, [(0, fake.node("vhost-0"))]).vhosts[0].netns == ""


async def test_an_agent_is_kept_on_update_only_when_its_file_matches_the_new_plan(tmp_path: Path) -> None:
    local = backend(tmp_path, max_agents=2)
    try:
        topology = tree(4)
        plans = {p.index: p for p in local.plan_agents(topology)}
        index = {node.name: i for i, node in enumerate(topology.vhosts())}
        plan = plans[0]
        plan.run_dir.mkdir(parents=True)
        served = [(index[name], topology.node(name)) for name in plan.vhosts]
        vhostsfile.write(plan.vhosts_file, vhosts_file(topology, served))
        assert _serves(plan.pid_file, plans)
        assert not _serves(plan.pid_file, {p.index: p for p in local.plan_agents(tree(6))})
        assert not _serves(plans[1].pid_file, plans)  # no vhosts file: not serving
        plan.vhosts_file.write_text("{")
        assert not _serves(plan.pid_file, plans)
    finally:
        await local.close()


def test_a_run_directory_too_long_for_socket_paths_is_refused(tmp_path: Path) -> None:
    check_socket_paths(tmp_path, tmp_path / "abc123")
    deep = tmp_path / ("d" * 100)
    with pytest.raises(FailedPrecondition, match="too long for unix socket paths"):
        check_socket_paths(deep, deep / "abc123")
