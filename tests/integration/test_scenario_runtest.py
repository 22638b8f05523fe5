"""RunTest at the moment Merak's clients ask for it: once compute says "n out of n done!", which can be
before its operation is over (the overlay is still being programmed). The test then waits for compute
instead of being refused; while VMs are still being made it is refused, as before."""

from __future__ import annotations

import asyncio

import pytest

from merak.v1 import common_pb2, scenario_pb2
from services.scenario import states
from services.scenario.models import COMPUTE, SCENARIO
from services.scenario.store import ScenarioStore
from tests.integration.scenario_lab import (
    Stack,
    act,
    compute_config,
    create_scenario,
    network_config,
    refused,
    topology_config,
    watch,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]
COMPUTE_, NETWORK, TOPOLOGY = scenario_pb2.COMPUTE, scenario_pb2.NETWORK, scenario_pb2.TOPOLOGY


async def _deployed(stack: Stack) -> tuple[str, str]:
    """A small scenario deployed (2 vhosts, 8 VMs); its id and its compute config's id."""
    created = await create_scenario(
        stack.stub,
        topology=topology_config(vhosts=2, racks=1, per_rack=2, cidr="10.203.0.0/24"),
        network=network_config(),
        compute=compute_config(nodes=2, vms_per_vpc=8),
    )
    sid = created.scenario.id
    await act(stack.stub, sid, TOPOLOGY, scenario_pb2.DEPLOY)
    await watch(stack, sid)
    await act(stack.stub, sid, NETWORK, scenario_pb2.DEPLOY)
    await act(stack.stub, sid, COMPUTE_, scenario_pb2.DEPLOY)
    assert (await watch(stack, sid))[-1].compute_status == scenario_pb2.READY
    return sid, created.compute.id


async def _finishing(stack: Stack, sid: str, compute_id: str, *, vms_left: int = 0) -> str:
    """Put compute back to the moment before its operation ends (and the scenario to DEPLOYING)."""
    key = f"merak:compute:cfg:{compute_id}:"
    await stack.redis.hset(key + "meta", "running", "1")
    if vms_left:
        await stack.redis.hincrby(key + "counts", str(common_pb2.DONE), -vms_left)
    await ScenarioStore(stack.redis).modify(
        SCENARIO, sid, lambda s: states.with_status(s, COMPUTE, scenario_pb2.DEPLOYING)
    )
    return key + "meta"


async def test_a_test_asked_while_compute_finishes_waits_and_runs(stack: Stack) -> None:
    sid, compute_id = await _deployed(stack)
    meta = await _finishing(stack, sid, compute_id)
    test = asyncio.ensure_future(stack.stub.RunTest(scenario_pb2.RunTestRequest(scenario_id=sid), timeout=60))
    done, _ = await asyncio.wait({test}, timeout=0.5)
    assert not done, "refused or run although compute's operation was not over"
    await stack.redis.hset(meta, "running", "0")  # the operation ends
    report = await test
    assert report.vms == 8 and report.failed == 0 and report.passed == report.pairs_tried > 0
    scenario = await stack.stub.GetScenario(scenario_pb2.GetRequest(id=sid))
    assert scenario.compute_status == scenario_pb2.READY


async def test_a_test_asked_while_vms_are_still_made_is_refused_at_once(stack: Stack) -> None:
    sid, compute_id = await _deployed(stack)
    meta = await _finishing(stack, sid, compute_id, vms_left=3)
    details = await refused(stack.stub.RunTest(scenario_pb2.RunTestRequest(scenario_id=sid), timeout=10))
    assert details == "cannot run the test: compute is DEPLOYING; wait until CHECK compute says READY"
    # What was taken away comes back, so the stack's teardown finds compute as it left it.
    await stack.redis.hincrby(meta.replace(":meta", ":counts"), str(common_pb2.DONE), 3)
    await stack.redis.hset(meta, "running", "0")
