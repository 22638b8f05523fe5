"""A running lab changes: 5 vhosts x 10 VMs grows to 8 x 10 and shrinks to 3 x 10 through the scenario
service's UPDATE actions (topology and compute), every pair pinging after each step, nothing leaked."""

from __future__ import annotations

import os

import grpc
import pytest
from google.protobuf import field_mask_pb2

from merak import netns
from merak.naming import topology_short_id
from merak.v1 import scenario_pb2
from services.topology.backends.local import ns_prefix
from tests.integration.scenario_lab import (
    Stack,
    act,
    compute_config,
    create_scenario,
    leftovers,
    network_config,
    topology_config,
    watch,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

TOPOLOGY, NETWORK, COMPUTE = scenario_pb2.TOPOLOGY, scenario_pb2.NETWORK, scenario_pb2.COMPUTE
DEPLOY, UPDATE, CHECK = scenario_pb2.DEPLOY, scenario_pb2.UPDATE, scenario_pb2.CHECK


async def resize_topology(stack: Stack, created_id: str, sid: str, vhosts: int) -> None:
    await stack.stub.UpdateTopologyConfig(
        scenario_pb2.UpdateTopologyConfigRequest(
            config=scenario_pb2.TopologyConfig(id=created_id, number_of_vhosts=vhosts),
            update_mask=field_mask_pb2.FieldMask(paths=["number_of_vhosts"]),
        )
    )
    await act(stack.stub, sid, TOPOLOGY, UPDATE)
    progress = await watch(stack, sid)
    assert progress[-1].topology_status == scenario_pb2.READY, progress[-1]
    check = await act(stack.stub, sid, TOPOLOGY, CHECK)
    assert check.counts.ready == vhosts == len(check.topology.compute_nodes), check.return_message


async def resize_compute(stack: Stack, created_id: str, sid: str, nodes: int) -> None:
    await stack.stub.UpdateComputeConfig(
        scenario_pb2.UpdateComputeConfigRequest(
            config=scenario_pb2.ComputeConfig(
                id=created_id, number_of_compute_nodes=nodes, number_of_vm_per_vpc=10 * nodes
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["number_of_compute_nodes", "number_of_vm_per_vpc"]),
        )
    )
    reply = await act(stack.stub, sid, COMPUTE, UPDATE)
    assert reply.compute.return_message.startswith("Successfully started the update: "), reply.compute
    progress = await watch(stack, sid)
    assert progress[-1].compute_status == scenario_pb2.READY, progress[-1]
    check = await act(stack.stub, sid, COMPUTE, CHECK)
    assert check.compute.progress.done == check.compute.progress.total == 10 * nodes, check.return_message


async def ping_all(stack: Stack, sid: str, vms: int) -> None:
    report = await stack.stub.RunTest(scenario_pb2.RunTestRequest(scenario_id=sid), timeout=300)
    assert report.vms == vms and report.pairs_tried == vms * (vms - 1), report.return_message
    assert report.failed == 0, list(report.failures)[:5]


def lab_namespaces(topology_id: str) -> list[str]:
    return netns.list_names(ns_prefix(topology_short_id(topology_id)))


async def test_a_running_lab_grows_and_shrinks_with_every_pair_pinging(stack: Stack) -> None:
    created = await create_scenario(
        stack.stub,
        topology=topology_config(vhosts=5, racks=0, per_rack=3, ports=2),
        compute=compute_config(nodes=5, vms_per_vpc=50),
    )
    sid = created.scenario.id
    for service in (TOPOLOGY, NETWORK, COMPUTE):
        await act(stack.stub, sid, service, DEPLOY)
        assert (await watch(stack, sid))[-1].status in (scenario_pb2.READY, scenario_pb2.DONE)
    await ping_all(stack, sid, 50)
    first = len(lab_namespaces(created.topology.id))

    # Grow: the topology first (the new vhosts), then compute (their VMs, and the overlay to them).
    await resize_topology(stack, created.topology.id, sid, 8)
    await resize_compute(stack, created.compute.id, sid, 8)
    await ping_all(stack, sid, 80)

    # Shrink: compute first (a vhost that holds VMs cannot go), then the topology.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await resize_topology(stack, created.topology.id, sid, 3)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "still hold VMs" in (caught.value.details() or "")
    scenario = await stack.stub.GetScenario(scenario_pb2.GetRequest(id=sid))
    assert scenario.topology_status == scenario_pb2.READY  # refused: nothing changed
    await resize_topology(stack, created.topology.id, sid, 8)  # the config back as the lab is
    await resize_compute(stack, created.compute.id, sid, 3)
    await resize_topology(stack, created.topology.id, sid, 3)
    await ping_all(stack, sid, 30)

    # No leak: 3 vhosts' worth of namespaces (the vhosts, their switches, VMs and VPC namespaces).
    now = lab_namespaces(created.topology.id)
    assert len([n for n in now if "-vhost-" in n]) == 3
    assert len(now) < first
    assert await stack.redis.keys("merak:compute:cfg:*:drop:*") == []

    await stack.stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=sid, teardown=True), timeout=180)
    assert await leftovers(stack, created.topology.id) == {"namespaces": [], "agents": [], "redis": []}


async def test_churn_keeps_the_population_while_replacing_vms(stack: Stack) -> None:
    rate, seconds, target = 20.0, float(os.environ.get("MERAK_CHURN_SECONDS", "60")), 200
    compute = compute_config(nodes=5, vms_per_vpc=target)
    compute.churn_rate, compute.churn_seconds = rate, seconds
    created = await create_scenario(
        stack.stub, topology=topology_config(vhosts=5, racks=0, per_rack=5, ports=2), compute=compute
    )
    sid = created.scenario.id
    for service in (TOPOLOGY, NETWORK):
        await act(stack.stub, sid, service, DEPLOY)
        await watch(stack, sid)
    await act(stack.stub, sid, COMPUTE, DEPLOY)
    request = scenario_pb2.WatchScenarioRequest(scenario_id=sid)
    progress = [p async for p in stack.stub.WatchScenario(request, timeout=seconds + 120)]
    assert progress[-1].compute_status == scenario_pb2.READY, progress[-1]
    churning = [p.compute for p in progress if p.compute.churning]
    assert churning and churning[-1].churned > 0  # WatchScenario streamed the churn

    # VMs were replaced, never ahead of the asked schedule. How close to the asked rate the churn
    # comes depends on the machine (a busy one replaces fewer): `python -m bench compute` measures it.
    results = await stack.stub.GetResults(scenario_pb2.GetResultsRequest(scenario_id=sid))
    assert 0 < results.churned <= rate * seconds, (results.churned, seconds)
    low, high = results.population_min, results.population_max
    assert 0.95 * target <= low <= high <= 1.05 * target, (low, high)
    # The series agree with the totals: the population over time stays within its bounds and
    # reaches its peak; VMs ready per second counts the first VMs and every newborn once.
    points = list(results.population)
    assert points and [p.second for p in points] == sorted({p.second for p in points}), points
    assert all(low <= p.value <= high for p in points) and max(p.value for p in points) == high
    ready = list(results.ready_per_second)
    width = ready[1].second - ready[0].second if len(ready) > 1 else 1.0
    assert results.vms_ready == target
    assert round(sum(p.value for p in ready) * width) == target + results.churned, (width, results.churned)
    check = await act(stack.stub, sid, COMPUTE, CHECK)
    assert check.compute.progress.done == target and check.compute.progress.error == 0

    report = await stack.stub.RunTest(
        scenario_pb2.RunTestRequest(scenario_id=sid, max_pairs=2000, seed=7), timeout=300
    )
    assert report.vms == target and report.pairs_tried == 2000 and report.failed == 0, list(report.failures)[
        :5
    ]

    await stack.stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=sid, teardown=True), timeout=180)
    assert await leftovers(stack, created.topology.id) == {"namespaces": [], "agents": [], "redis": []}


async def test_an_update_needs_the_addresses_it_adds_counting_those_it_frees(stack: Stack) -> None:
    network = network_config()
    subnet = network.vpcs[0].subnet_info[0]
    subnet.subnet_cidr, subnet.subnet_gateway = "10.1.0.0/27", "10.1.0.1"  # 29 addresses for VMs
    created = await create_scenario(
        stack.stub,
        topology=topology_config(vhosts=5, racks=0, per_rack=5, ports=2),
        network=network,
        compute=compute_config(nodes=5, vms_per_vpc=20),
    )
    sid = created.scenario.id
    for service in (TOPOLOGY, NETWORK, COMPUTE):
        await act(stack.stub, sid, service, DEPLOY)
        await watch(stack, sid)

    async def resize(nodes: int, vms: int) -> scenario_pb2.ScenarioActionReply:
        await stack.stub.UpdateComputeConfig(
            scenario_pb2.UpdateComputeConfigRequest(
                config=scenario_pb2.ComputeConfig(
                    id=created.compute.id, number_of_compute_nodes=nodes, number_of_vm_per_vpc=vms
                ),
                update_mask=field_mask_pb2.FieldMask(
                    paths=["number_of_compute_nodes", "number_of_vm_per_vpc"]
                ),
            )
        )
        return await act(stack.stub, sid, COMPUTE, UPDATE)

    # 20 VMs more with 9 addresses free: refused before anything changes.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await resize(5, 40)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "20 VMs asked for, but subnet 10.1.0.0/27 has 9 free addresses" in (caught.value.details() or "")
    assert (
        await stack.stub.GetScenario(scenario_pb2.GetRequest(id=sid))
    ).compute_status == scenario_pb2.READY

    # 4 hosts x 7: 12 new VMs, 9 free + the 4 that vhost-4's VMs give back.
    await resize(4, 28)
    assert (await watch(stack, sid))[-1].compute_status == scenario_pb2.READY
    check = await act(stack.stub, sid, COMPUTE, CHECK)
    assert check.compute.progress.done == check.compute.progress.total == 28
    await ping_all(stack, sid, 28)
    await stack.stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=sid, teardown=True), timeout=180)
