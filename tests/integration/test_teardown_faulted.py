"""Teardown always ends (#28): a scenario whose lab has a crashed or a frozen host is deleted with
teardown; the lab's faults are cleared first, nothing of the lab is left, and what fails is said in a
short human message (never a repr)."""

from __future__ import annotations

import os
import signal

import grpc
import pytest

from merak.procs import pid_from_file
from merak.v1 import common_pb2, scenario_pb2, topology_pb2, topology_pb2_grpc
from services.topology.models import TopologySpec
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
