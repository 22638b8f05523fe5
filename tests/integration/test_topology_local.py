"""Topology service on the local backend: real namespaces, veth pairs, bridges, agents, Redis."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from merak import netns
from merak.grpcclient import open_channel
from merak.service import BuiltService
from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc
from services.topology.app import build
from services.topology.backends.local import ns_name, ns_prefix, vm_ns_prefix
from services.topology.config import TopologySettings
from services.topology.generator import generate, spec_from_proto
from services.topology.manager import TopologyManager
from services.topology.models import TopologySpec
from tests.support import assert_eventually, unique_name
from tests.support.plugin import ServeBuilt
from tests.unit.topology.test_generator import custom

pytestmark = pytest.mark.root


@dataclass
class Lab:
    """A topology service on a real server, and what a test needs to look behind it."""

    stub: topology_pb2_grpc.MerakTopologyServiceAsyncStub
    redis: aioredis.Redis
    settings: TopologySettings
    address: str


def _local(redis_url: str, **settings: Any) -> TopologySettings:
    """A topology service on 127.0.0.1:0 over the test's Redis; deleted labs' logs under its run directory."""
    if "run_dir" in settings:
        settings.setdefault("lab_log_dir", settings["run_dir"] / "lab-logs")
    return TopologySettings(host="127.0.0.1", grpc_port=0, redis_url=redis_url, **settings)


@pytest.fixture
def run_dir() -> Iterator[Path]:
    # Unix socket paths must stay under 108 bytes, so not under pytest's long tmp paths.
    path = Path(tempfile.mkdtemp(prefix="mk", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def _serve(
    serve_built: ServeBuilt, settings: TopologySettings
) -> tuple[str, BuiltService[TopologyManager]]:
    """A topology service as its process builds it, on 127.0.0.1:0."""
    built = await build(settings)
    return await serve_built(built), built


@pytest.fixture
async def lab(
    serve_built: ServeBuilt, redis_client: aioredis.Redis, redis_url: str, run_dir: Path
) -> AsyncIterator[Lab]:
    settings = _local(redis_url, run_dir=run_dir, max_agents=4, fake_vhosts_per_agent=25_000)
    address, built = await _serve(serve_built, settings)
    manager = built.root
    async with open_channel(address) as channel:
        stub = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        try:
            yield Lab(stub, redis_client, settings, address)
        finally:
            # Whatever a failing test left behind goes: every topology this service knows.
            for topology_id in await manager.store.ids():
                await manager.delete(topology_id)


def tree(
    topology_id: str,
    *,
    vhosts: int = 5,
    racks: int = 2,
    per_rack: int = 5,
    ports: int = 5,
    cidr: str = "10.200.0.0/16",
    dataplane: str = "",
) -> topology_pb2.InternalTopologyConfiguration:
    """The Merak teste2e topology by default."""
    return topology_pb2.InternalTopologyConfiguration(
        topology_id=topology_id,
        name="Top1",
        topology_type=topology_pb2.TREE,
        number_of_vhosts=vhosts,
        number_of_racks=racks,
        vhost_per_rack=per_rack,
        ports_per_vswitch=ports,
        data_plane_cidr=cidr,
        dataplane=dataplane,
    )


async def call(
    stub: topology_pb2_grpc.MerakTopologyServiceAsyncStub,
    op: common_pb2.OperationType.ValueType,
    config: topology_pb2.InternalTopologyConfiguration,
) -> topology_pb2.ReturnTopologyMessage:
    return await stub.TopologyHandler(topology_pb2.InternalTopologyInfo(operation_type=op, config=config))


async def wait_ready(lab: Lab, config: topology_pb2.InternalTopologyConfiguration, timeout: float = 60) -> (
    topology_pb2.ReturnTopologyMessage
):  # fmt: skip
    async def ready() -> topology_pb2.ReturnTopologyMessage | None:
        reply = await call(lab.stub, common_pb2.INFO, config)
        assert all(node.status != common_pb2.ERROR for node in reply.compute_nodes), reply.return_message
        return reply if all(n.status == common_pb2.READY for n in reply.compute_nodes) else None

    return await assert_eventually(ready, timeout=timeout, interval=0.1, message="topology not READY")


def short_of(topology_id: str) -> str:
    return TopologySpec(topology_id=topology_id, name="", type=0, number_of_vhosts=1).short_id


def ping(namespace: str, address: str) -> bool:
    result = subprocess.run(
        ["ip", "netns", "exec", namespace, "ping", "-c", "1", "-W", "1", address],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def agent_processes(run_dir: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", str(run_dir)], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if "services.agent" in line]


async def test_teste2e_topology_deploys_pings_and_deletes_cleanly(lab: Lab) -> None:
    topology_id = unique_name("t-")
    config = tree(topology_id)
    reply = await call(lab.stub, common_pb2.CREATE, config)
    assert reply.return_code == common_pb2.OK
    assert [n.name for n in reply.compute_nodes] == [f"vhost-{i}" for i in range(5)]
    assert [n.datapath_ip for n in reply.compute_nodes] == [f"10.200.0.{i}" for i in range(1, 6)]

    reply = await wait_ready(lab, config)
    node = reply.compute_nodes[0]
    assert node.veth == "vh0-eth1"
    assert node.dataplane == "real"
    assert node.agent_endpoint.startswith(f"unix://{lab.settings.run_dir}")
    assert node.datapath_prefix_len == 16
    assert len({n.agent_endpoint for n in reply.compute_nodes}) == 3  # groups of ceil(5 / max_agents=4)
    assert reply.hosts and reply.hosts[0].status == common_pb2.READY
    assert "READY: 5" in reply.return_message

    short = short_of(topology_id)
    namespaces = netns.list_names(ns_prefix(short))
    # 5 vhosts + rack-1 + vs-1 + core-1, all carrying the short topology id.
    assert sorted(namespaces) == sorted(
        f"{ns_prefix(short)}{n}" for n in ["vhost-0", "vhost-1", "vhost-2", "vhost-3", "vhost-4",
                                            "rack-1", "vs-1", "core-1"]
    )  # fmt: skip
    # The underlay really works: vhost-0 reaches vhost-4 through rack-1's bridge.
    assert await assert_eventually(lambda: ping(f"{ns_prefix(short)}vhost-0", "10.200.0.5"), timeout=10)
    assert agent_processes(lab.settings.topology_run_dir())

    deleted = await call(lab.stub, common_pb2.DELETE, config)
    assert deleted.return_code == common_pb2.OK
    assert netns.list_names(ns_prefix(short)) == []
    assert agent_processes(lab.settings.topology_run_dir()) == []
    assert await lab.redis.keys(f"merak:topology:topo:{topology_id}*") == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(lab.stub, common_pb2.INFO, config)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_agent_per_vhost_runs_inside_its_namespace(
    serve_built: ServeBuilt, redis_client: aioredis.Redis, redis_url: str, run_dir: Path
) -> None:
    settings = _local(redis_url, run_dir=run_dir, max_agents=16)
    address, built = await _serve(serve_built, settings)
    manager = built.root
    config = tree(unique_name("t-"), vhosts=3)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            lab = Lab(topology_pb2_grpc.MerakTopologyServiceStub(channel), redis_client, settings, address)
            await call(lab.stub, common_pb2.CREATE, config)
            reply = await wait_ready(lab, config)
            assert len({n.agent_endpoint for n in reply.compute_nodes}) == 3
            short = short_of(config.topology_id)
            for line in agent_processes(settings.topology_run_dir()):
                pid = line.split()[0]
                inode = os.stat(f"/proc/{pid}/ns/net").st_ino
                assert inode in {
                    os.stat(f"/run/netns/{n}").st_ino for n in netns.list_names(ns_prefix(short))
                }
    finally:
        await manager.delete(config.topology_id)


async def test_uneven_racks_and_small_cidr(lab: Lab) -> None:
    seven = tree(unique_name("t-"), vhosts=7, racks=2, per_rack=5)
    reply = await call(lab.stub, common_pb2.CREATE, seven)
    assert len(reply.compute_nodes) == 7
    small = tree(unique_name("t-"), vhosts=100, racks=0, per_rack=25, ports=4, cidr="10.201.7.0/24")
    reply = await call(lab.stub, common_pb2.CREATE, small)
    assert reply.compute_nodes[99].datapath_ip == "10.201.7.100"
    await wait_ready(lab, seven)
    await wait_ready(lab, small, timeout=120)
    short = short_of(small.topology_id)
    assert await assert_eventually(lambda: ping(f"{ns_prefix(short)}vhost-0", "10.201.7.100"), timeout=10)
    assert ping(f"{ns_prefix(short_of(seven.topology_id))}vhost-6", "10.200.0.1")
    for config in (seven, small):
        await call(lab.stub, common_pb2.DELETE, config)
        assert netns.list_names(ns_prefix(short_of(config.topology_id))) == []


BAD_INPUT = [
    ({"number_of_vhosts": 0}, "config.number_of_vhosts"),
    ({"number_of_vhosts": 50_000_000}, "config.number_of_vhosts"),
    (
        {"number_of_vhosts": 20_000, "number_of_racks": 0, "data_plane_cidr": "10.0.0.0/8"},
        "config.number_of_vhosts",
    ),
    ({"data_plane_cidr": "10.200.0.0/33"}, "config.data_plane_cidr"),
    ({"data_plane_cidr": "ten.0.0.0/8"}, "config.data_plane_cidr"),
    (
        {"number_of_vhosts": 300, "number_of_racks": 0, "data_plane_cidr": "10.0.0.0/24"},
        "config.data_plane_cidr",
    ),
    ({"number_of_racks": 1}, "config.number_of_racks"),
    ({"backend": "openstack"}, "config.backend"),
    ({"dataplane": "virtual"}, "config.dataplane"),
    ({"topology_id": ""}, "config.topology_id"),
]


@pytest.mark.parametrize(("changes", "field"), BAD_INPUT)
async def test_bad_input_is_invalid_argument_and_creates_nothing(
    lab: Lab, changes: dict[str, object], field: str
) -> None:
    config = tree(unique_name("t-"), vhosts=7, racks=2, per_rack=5)
    for name, value in changes.items():
        setattr(config, name, value)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(lab.stub, common_pb2.CREATE, config)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert (caught.value.details() or "").startswith(field), caught.value.details()
    assert await lab.redis.keys("merak:topology:topo:*") == []
    if config.topology_id:
        assert netns.list_names(ns_prefix(short_of(config.topology_id))) == []


async def test_custom_topology_errors_name_the_vlink(lab: Lab) -> None:
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=unique_name("t-"), topology_type=topology_pb2.CUSTOM, data_plane_cidr="10.9.0.0/24"
    )
    config.vnodes.add(name="h1", type=topology_pb2.VHOST)
    config.vnodes.add(name="s1", type=topology_pb2.VSWITCH)
    config.vlinks.add(name="l1", src="h1", dst="nowhere")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(lab.stub, common_pb2.CREATE, config)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("config.vlinks[0].dst")
    config.vlinks[0].dst = "s1"
    config.vnodes.add(name="h1", type=topology_pb2.VHOST)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(lab.stub, common_pb2.CREATE, config)
    assert (caught.value.details() or "").startswith("config.vnodes[2].name")
    assert await lab.redis.keys("merak:topology:topo:*") == []


async def test_create_is_idempotent_and_conflicts_are_already_exists(lab: Lab) -> None:
    config = tree(unique_name("t-"), vhosts=2, dataplane="fake")
    first = await call(lab.stub, common_pb2.CREATE, config)
    again = await call(lab.stub, common_pb2.CREATE, config)
    assert [n.id for n in again.compute_nodes] == [n.id for n in first.compute_nodes]
    changed = tree(config.topology_id, vhosts=3, dataplane="fake")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(lab.stub, common_pb2.CREATE, changed)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    same = await call(lab.stub, common_pb2.UPDATE, config)  # the lab is that already: nothing to do
    assert [n.id for n in same.compute_nodes] == [n.id for n in first.compute_nodes]
    assert not same.return_message.startswith("UPDATE started")


async def test_fake_topology_of_100k_vhosts_reaches_ready(lab: Lab) -> None:
    config = tree(unique_name("t-"), vhosts=100_000, racks=0, per_rack=50, ports=32, cidr="10.0.0.0/8",
                  dataplane="fake")  # fmt: skip
    reply = await call(lab.stub, common_pb2.CREATE, config)
    assert len(reply.compute_nodes) == 100_000
    reply = await wait_ready(lab, config, timeout=120)
    assert all(n.dataplane == "fake" for n in reply.compute_nodes)
    assert "fake topology" in reply.return_message
    assert len({n.agent_endpoint for n in reply.compute_nodes}) == 4  # 25,000 vhosts per agent
    assert netns.list_names(ns_prefix(short_of(config.topology_id))) == []  # nothing in the kernel
    await call(lab.stub, common_pb2.DELETE, config)
    assert agent_processes(lab.settings.topology_run_dir()) == []


async def test_restart_keeps_topologies_manageable(
    serve_built: ServeBuilt, redis_client: aioredis.Redis, redis_url: str, run_dir: Path
) -> None:
    settings = _local(redis_url, run_dir=run_dir, max_agents=2)
    address, built = await _serve(serve_built, settings)
    config = tree(unique_name("t-"), vhosts=3)
    async with grpc.aio.insecure_channel(address) as channel:
        lab = Lab(topology_pb2_grpc.MerakTopologyServiceStub(channel), redis_client, settings, address)
        await call(lab.stub, common_pb2.CREATE, config)
        await wait_ready(lab, config)
    await built.server.stop(0)
    await built.close()

    # A new service process: same Redis, same run directory.
    address, built = await _serve(serve_built, settings)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            lab = Lab(topology_pb2_grpc.MerakTopologyServiceStub(channel), redis_client, settings, address)
            reply = await wait_ready(lab, config)
            assert len(reply.compute_nodes) == 3
            await call(lab.stub, common_pb2.DELETE, config)
        assert netns.list_names(ns_prefix(short_of(config.topology_id))) == []
        assert agent_processes(settings.topology_run_dir()) == []
    finally:
        await built.server.stop(0)
        await built.close()


def lab_namespaces(config: topology_pb2.InternalTopologyConfiguration) -> list[str]:
    """The namespaces the nodes of `config` live in."""
    topology = generate(spec_from_proto(config))
    return sorted(ns_name(topology.spec.short_id, node.name) for node in topology.nodes)


async def test_update_grows_and_shrinks_a_running_lab_touching_only_what_changes(lab: Lab) -> None:
    topology_id = unique_name("t-")
    config = tree(topology_id, vhosts=5, racks=0, per_rack=3, ports=2)
    await call(lab.stub, common_pb2.CREATE, config)
    await wait_ready(lab, config)
    short = short_of(topology_id)
    run = lab.settings.topology_run_dir() / short

    def inode(node: str) -> int:
        return os.stat(f"/run/netns/{ns_name(short, node)}").st_ino

    before = {node: inode(node) for node in ("vhost-0", "vhost-4", "rack-1")}
    agent_0 = (run / "agent-0.pid").read_text()  # vhost-0 and vhost-1, before and after

    # Grow: 5 -> 8 vhosts (a third rack, the vswitch layers above it change).
    grown = tree(topology_id, vhosts=8, racks=0, per_rack=3, ports=2)
    reply = await call(lab.stub, common_pb2.UPDATE, grown)
    assert reply.return_message.startswith("UPDATE started: +3 vhosts"), reply.return_message
    reply = await wait_ready(lab, grown)
    assert [n.name for n in reply.compute_nodes] == [f"vhost-{i}" for i in range(8)]
    assert sorted(netns.list_names(ns_prefix(short))) == lab_namespaces(grown)
    assert {node: inode(node) for node in before} == before  # not rebuilt
    assert (run / "agent-0.pid").read_text() == agent_0  # not restarted
    assert len(agent_processes(lab.settings.topology_run_dir())) == 4
    assert await assert_eventually(lambda: ping(ns_name(short, "vhost-0"), "10.200.0.8"), timeout=10)
    assert await assert_eventually(lambda: ping(ns_name(short, "vhost-7"), "10.200.0.5"), timeout=10)

    # What UPDATE cannot do, and what it must not lose, is refused with the lab untouched.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(
            lab.stub,
            common_pb2.UPDATE,
            tree(topology_id, vhosts=8, racks=0, per_rack=3, ports=2, cidr="10.9.0.0/16"),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("config.data_plane_cidr: ")
    shrunk = tree(topology_id, vhosts=3, racks=0, per_rack=3, ports=2)
    vm = f"{vm_ns_prefix(short, 5)}-vtest"  # a VM of vhost-5
    vpc = f"{vm_ns_prefix(short, 6)}-vpc7"  # a VPC namespace vhost-6 keeps after its VMs went
    netns.create(vm)
    netns.create(vpc)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(lab.stub, common_pb2.UPDATE, shrunk)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "vhost-5 (1)" in (caught.value.details() or "")
    finally:
        netns.remove(vm)
    assert len((await call(lab.stub, common_pb2.INFO, grown)).compute_nodes) == 8

    # Shrink: 8 -> 3 vhosts; the VPC namespace of a vhost that went goes with it.
    reply = await call(lab.stub, common_pb2.UPDATE, shrunk)
    assert reply.return_message.startswith("UPDATE started: ") and "-5 vhosts" in reply.return_message
    reply = await wait_ready(lab, shrunk)
    assert [n.name for n in reply.compute_nodes] == ["vhost-0", "vhost-1", "vhost-2"]
    assert sorted(netns.list_names(ns_prefix(short))) == lab_namespaces(shrunk)
    assert not netns.exists(vpc)
    assert inode("vhost-0") == before["vhost-0"]
    assert len(agent_processes(lab.settings.topology_run_dir())) == 3
    assert await assert_eventually(lambda: ping(ns_name(short, "vhost-0"), "10.200.0.3"), timeout=10)
    assert await assert_eventually(lambda: ping(ns_name(short, "vhost-2"), "10.200.0.1"), timeout=10)
    again = await call(lab.stub, common_pb2.UPDATE, shrunk)
    assert not again.return_message.startswith("UPDATE started")  # nothing to do

    await call(lab.stub, common_pb2.DELETE, shrunk)
    assert netns.list_names(ns_prefix(short)) == []
    assert agent_processes(lab.settings.topology_run_dir()) == []


async def test_update_of_a_custom_topology_moves_a_link(lab: Lab) -> None:
    nodes = [
        ("s1", topology_pb2.VSWITCH, []),
        *((f"h{i}", topology_pb2.VHOST, [(f"h{i}-eth1", f"10.0.0.{i + 1}/24")]) for i in range(3)),
    ]
    before = custom(nodes, [("s1", "h0-eth1"), ("s1", "h1-eth1")])
    after = custom(nodes, [("s1", "h0-eth1"), ("s1", "h2-eth1")])
    before.topology_id = after.topology_id = unique_name("t-")
    await call(lab.stub, common_pb2.CREATE, before)
    await wait_ready(lab, before)
    short = short_of(before.topology_id)
    assert await assert_eventually(lambda: ping(ns_name(short, "h0"), "10.0.0.2"), timeout=10)

    reply = await call(lab.stub, common_pb2.UPDATE, after)
    assert "+1 link" in reply.return_message and "-1 link" in reply.return_message, reply.return_message
    await wait_ready(lab, after)
    assert await assert_eventually(lambda: ping(ns_name(short, "h0"), "10.0.0.3"), timeout=10)
    assert not ping(ns_name(short, "h0"), "10.0.0.2")  # h1 is unlinked now
    await call(lab.stub, common_pb2.DELETE, after)
    assert netns.list_names(ns_prefix(short)) == []


async def test_an_update_cut_short_by_a_restart_is_finished_by_the_next_service(
    serve_built: ServeBuilt, redis_client: aioredis.Redis, redis_url: str, run_dir: Path
) -> None:
    settings = _local(redis_url, run_dir=run_dir, max_agents=16)
    address, built = await _serve(serve_built, settings)
    topology_id = unique_name("t-")
    before = tree(topology_id, vhosts=5, racks=0, per_rack=3, ports=2)
    after = tree(topology_id, vhosts=3, racks=0, per_rack=3, ports=2)
    async with grpc.aio.insecure_channel(address) as channel:
        lab = Lab(topology_pb2_grpc.MerakTopologyServiceStub(channel), redis_client, settings, address)
        await call(lab.stub, common_pb2.CREATE, before)
        await wait_ready(lab, before)

        async def recorded() -> str | None:  # the build has recorded its end, as an UPDATE waits for
            said = (await call(lab.stub, common_pb2.INFO, before)).return_message
            return said if "topology READY" in said else None

        said: str = await assert_eventually(recorded, timeout=30)
        assert "READY: 5" in said
    # What a service killed right after accepting the UPDATE leaves: the new config, nothing done.
    await built.root.store.replace_config(after, before)
    await built.server.stop(0)
    await built.close()

    address, built = await _serve(serve_built, settings)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            lab = Lab(topology_pb2_grpc.MerakTopologyServiceStub(channel), redis_client, settings, address)
            reply = await wait_ready(lab, after)
            assert [n.name for n in reply.compute_nodes] == ["vhost-0", "vhost-1", "vhost-2"]
            assert "error" not in reply.return_message, reply.return_message
            short = short_of(topology_id)
            await assert_eventually(
                lambda: sorted(netns.list_names(ns_prefix(short))) == lab_namespaces(after), timeout=30
            )
            assert len(agent_processes(settings.topology_run_dir())) == 3
            await call(lab.stub, common_pb2.DELETE, after)
        assert netns.list_names(ns_prefix(short)) == []
    finally:
        if await built.root.store.get(topology_id) is not None:  # a failure above: leave nothing
            await built.root.delete(topology_id)
        await built.server.stop(0)
        await built.close()


async def _ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("ip", *args)
    assert await proc.wait() == 0, args


async def test_an_update_that_failed_can_be_tried_again(lab: Lab) -> None:
    topology_id = unique_name("t-")
    before = tree(topology_id, vhosts=3, racks=0, per_rack=3, ports=2)
    after = tree(topology_id, vhosts=5, racks=0, per_rack=3, ports=2)
    await call(lab.stub, common_pb2.CREATE, before)
    await wait_ready(lab, before)
    short = short_of(topology_id)
    # vhost-3's NIC exists already in its namespace: the update's veth cannot be made (EEXIST).
    blocker = ns_name(short, "vhost-3")
    netns.create(blocker)
    await _ip("-n", blocker, "link", "add", "vh3-eth1", "type", "veth", "peer", "name", "vh3-x")

    async def failed() -> str | None:
        said = (await call(lab.stub, common_pb2.INFO, after)).return_message
        return said if "topology ERROR" in said else None

    async def ready() -> str | None:
        said = (await call(lab.stub, common_pb2.INFO, after)).return_message
        return said if "topology READY" in said else None

    await call(lab.stub, common_pb2.UPDATE, after)
    said: str = await assert_eventually(failed, timeout=60)
    assert "error:" in said
    await _ip("-n", blocker, "link", "del", "vh3-eth1")

    reply = await call(lab.stub, common_pb2.UPDATE, after)  # the same config, again
    assert reply.return_message.startswith("UPDATE started: "), reply.return_message
    said = await assert_eventually(ready, timeout=60)
    assert sorted(netns.list_names(ns_prefix(short))) == lab_namespaces(after)
    assert await assert_eventually(lambda: ping(ns_name(short, "vhost-0"), "10.200.0.5"), timeout=10)
    await call(lab.stub, common_pb2.DELETE, after)
    assert netns.list_names(ns_prefix(short)) == []
