"""Teardown always ends (#28): a scenario whose lab has a crashed or a frozen host is deleted with
teardown; the lab's faults are cleared first, nothing of the lab is left, and what fails is said in a
short human message (never a repr)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis

from merak import netns
from merak.procs import pid_from_file
from merak.v1 import common_pb2, scenario_pb2, scenario_pb2_grpc, topology_pb2, topology_pb2_grpc
from merak_tools.localstack import delete_labs
from services.topology.backends.local.kernel import Kernel
from services.topology.models import TopologySpec
from services.topology.names import ns_prefix
from tests.integration.scenario_lab import (
    Created,
    Stack,
    act,
    compute_config,
    create_scenario,
    leftovers,
    topology_config,
    watch,
)
from tests.stack import ServiceStack
from tests.support import unique_name

pytestmark = [pytest.mark.root, pytest.mark.slow]

TOPOLOGY, NETWORK, COMPUTE = scenario_pb2.TOPOLOGY, scenario_pb2.NETWORK, scenario_pb2.COMPUTE
DEPLOY = scenario_pb2.DEPLOY


async def deployed_lab(
    stack: Stack, services: tuple[scenario_pb2.ServiceName.ValueType, ...] = (TOPOLOGY, NETWORK, COMPUTE)
) -> Created:
    """A 3-host scenario with 6 VMs, `services` deployed in turn, each READY."""
    created = await create_scenario(
        stack.stub,
        topology=topology_config(vhosts=3, racks=1, per_rack=3),
        compute=compute_config(nodes=3, vms_per_vpc=6),
    )
    status = {TOPOLOGY: "topology_status", NETWORK: "network_status", COMPUTE: "compute_status"}
    for service in services:
        await act(stack.stub, created.scenario.id, service, DEPLOY)
        last = (await watch(stack, created.scenario.id))[-1]
        assert getattr(last, status[service]) == scenario_pb2.READY, last
    return created


@pytest.mark.parametrize(
    "state", [topology_pb2.HOST_CRASHED, topology_pb2.HOST_FROZEN], ids=["crashed", "frozen"]
)
async def test_a_lab_with_a_faulted_host_is_torn_down(stack: Stack, state: int) -> None:
    created = await deployed_lab(stack)
    sid = created.scenario.id
    async with grpc.aio.insecure_channel(stack.services.addresses["topology"]) as channel:
        topology = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        fault = topology_pb2.HostFault(vhost="vhost-1", state=state)  # type: ignore[arg-type]
        await topology.SetFaults(
            topology_pb2.SetFaultsRequest(topology_id=created.topology.id, hosts=[fault])
        )
    # Before #28 this ran past 300 s (frozen) or failed after 151 s leaving namespaces (crashed).
    await stack.stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=sid, teardown=True), timeout=300)
    assert await leftovers(stack, created.topology.id) == {"namespaces": [], "agents": [], "redis": []}


async def test_merak_down_deletes_a_lab_with_frozen_and_crashed_hosts(stack: Stack) -> None:
    # What `merak down` does: a TopologyHandler DELETE of every lab, here one holding host faults.
    created = await deployed_lab(stack, (TOPOLOGY,))
    async with grpc.aio.insecure_channel(stack.services.addresses["topology"]) as channel:
        topology = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        faults = [
            topology_pb2.HostFault(vhost="vhost-1", state=topology_pb2.HOST_FROZEN),
            topology_pb2.HostFault(vhost="vhost-2", state=topology_pb2.HOST_CRASHED),
        ]
        await topology.SetFaults(topology_pb2.SetFaultsRequest(topology_id=created.topology.id, hosts=faults))
        reply = await topology.TopologyHandler(
            topology_pb2.InternalTopologyInfo(
                operation_type=common_pb2.DELETE,
                config=topology_pb2.InternalTopologyConfiguration(topology_id=created.topology.id),
            ),
            timeout=120,
        )
        assert reply.return_message.startswith("DELETE success: "), reply.return_message
    left = await leftovers(stack, created.topology.id)
    assert (left["namespaces"], left["agents"]) == ([], [])


async def test_agents_that_do_not_answer_do_not_stop_the_teardown(stack: Stack) -> None:
    # The lab's agents stop answering behind the fault API's back (SIGSTOP: no fault to heal says so).
    # Compute's DELETE cannot finish (the scenario gives up on it after its teardown timeout); the
    # teardown deletes the lab anyway (the topology service thaws and stops its agents) and asks compute
    # again, which counts the VMs of the gone hosts as gone: nothing is left.
    created = await deployed_lab(stack)
    sid = created.scenario.id
    short = TopologySpec(topology_id=created.topology.id, name="", type=0, number_of_vhosts=1).short_id
    pids = [
        pid
        for f in (stack.run_dir / short).glob("agent-*.pid")
        if (pid := pid_from_file(f, "services.agent"))
    ]
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    await stack.stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=sid, teardown=True), timeout=600)
    assert await leftovers(stack, created.topology.id) == {"namespaces": [], "agents": [], "redis": []}


@pytest.fixture
async def short_calls(temporal_services: ServiceStack, redis_client: aioredis.Redis) -> AsyncIterator[Stack]:
    """The scenario stack with a 10 s deadline per call to another service: a service that is down
    fails its step in 10 s, not 600."""
    services = temporal_services
    await services.everything(teardown_timeout=60, watch_interval=0.2, call_timeout=10)
    async with grpc.aio.insecure_channel(services.addresses["scenario"]) as channel:
        stub = scenario_pb2_grpc.MerakScenarioServiceStub(channel)
        yield Stack(stub, redis_client, services.run_dir, services)


async def test_a_network_delete_that_fails_still_deletes_the_lab(short_calls: Stack) -> None:
    stack = short_calls
    created = await deployed_lab(stack, (TOPOLOGY, NETWORK))
    sid = created.scenario.id
    await stack.services.built["network"].server.stop(0)  # the network service goes down
    # Before, the teardown stopped at the network's failure: the lab stayed up.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.DeleteScenario(
            scenario_pb2.DeleteScenarioRequest(id=sid, teardown=True), timeout=120
        )
    details = caught.value.details() or ""
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, details
    assert details.startswith(
        f"cannot delete scenario {sid!r}: its teardown left network (network service at "
    )
    assert "; topology deleted. CHECK network, DELETE it again, then delete the scenario" in details, details
    assert "Error" not in details and "<" not in details and len(details) < 500, details
    left = await leftovers(stack, created.topology.id)
    assert (left["namespaces"], left["agents"]) == ([], [])
    scenario = await stack.stub.GetScenario(scenario_pb2.GetRequest(id=sid))
    assert (scenario.topology_status, scenario.network_status) == (scenario_pb2.NONE, scenario_pb2.FAILED)


async def test_merak_down_tries_every_lab_when_one_fails(stack: Stack) -> None:
    # Two labs, and a DELETE deadline no call can meet: each lab is tried and said to fail in short
    # words; then a second pass deletes both.
    ids = [unique_name("down-") for _ in range(2)]
    async with grpc.aio.insecure_channel(stack.services.addresses["topology"]) as channel:
        topology = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        for n, topology_id in enumerate(ids):
            config = topology_pb2.InternalTopologyConfiguration(
                topology_id=topology_id, topology_type=topology_pb2.TREE, number_of_vhosts=1,
                vhost_per_rack=1, ports_per_vswitch=2, data_plane_cidr=f"10.{210 + n}.0.0/24",
            )  # fmt: skip
            await topology.TopologyHandler(
                topology_pb2.InternalTopologyInfo(operation_type=common_pb2.CREATE, config=config)
            )
    lines: list[str] = []
    with grpc.insecure_channel(stack.services.addresses["topology"]) as blocking:
        stub = topology_pb2_grpc.MerakTopologyServiceStub(blocking)
        # In a thread: the services answer on this test's event loop.
        deleted, failed = await asyncio.to_thread(delete_labs, stub, lines.append, 1e-6)
        assert deleted == []
        assert sorted(failed) == sorted(f"{i}: DEADLINE_EXCEEDED: Deadline Exceeded" for i in ids), failed
        # A DELETE the client gave up on may still finish at the server: a lab gone by the second
        # pass is not listed, or found gone (NOT_FOUND counts as deleted); nothing fails.
        deleted, failed = await asyncio.to_thread(delete_labs, stub, lines.append)
        listed = await asyncio.to_thread(
            lambda: [
                t.topology_id for t in stub.ListTopologies(topology_pb2.ListTopologiesRequest()).topologies
            ]
        )
    assert failed == [] and set(deleted) <= set(ids), (deleted, failed)
    assert not set(listed) & set(ids), listed
    for topology_id in ids:
        left = await leftovers(stack, topology_id)
        assert (left["namespaces"], left["agents"]) == ([], [])


async def test_remove_topology_goes_on_past_a_namespace_it_cannot_remove() -> None:
    short = unique_name("t", 7)
    names = [f"{ns_prefix(short)}{node}" for node in ("a", "b", "c")]
    for name in names:
        await asyncio.to_thread(netns.create, name)  # unshare: never on the event loop's thread
    try:
        # A second mount on b's file: the first umount leaves a mount point, which unlink refuses (EBUSY).
        path = bytes(netns.path_of(names[1]))
        assert ctypes.CDLL(None, use_errno=True).mount(path, path, None, netns.MS_BIND, None) == 0
        kernel = Kernel(workers=1)
        try:
            removed, left = kernel.remove_topology(short)
        finally:
            kernel.close()
        assert (removed, left) == (2, [f"{names[1]} (Device or resource busy)"])
        assert netns.list_names(ns_prefix(short)) == [names[1]]
    finally:
        for name in names:
            netns.remove(name)  # b's last mount goes now
    assert netns.list_names(ns_prefix(short)) == []
