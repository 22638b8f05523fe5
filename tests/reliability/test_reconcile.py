"""A scenario whose lab went away behind its back (`merak down` deletes the topologies; a machine
restarts) stops saying READY when the scenario service starts: its compute config is deleted, which
frees the VMs' addresses, and topology and compute say NONE."""

from __future__ import annotations

import json

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from merak.v1 import common_pb2, scenario_pb2, scenario_pb2_grpc, topology_pb2, topology_pb2_grpc
from services.scenario.manager import ScenarioManager
from services.scenario.metrics import ScenarioMetrics
from tests.integration.scenario_lab import (
    act,
    compute_config,
    create_scenario,
    pingall_config,
    topology_config,
)
from tests.stack import ServiceStack
from tests.support import assert_eventually

pytestmark = [pytest.mark.root, pytest.mark.slow]
TOPOLOGY, NETWORK, COMPUTE = scenario_pb2.TOPOLOGY, scenario_pb2.NETWORK, scenario_pb2.COMPUTE


async def _settle(stub: scenario_pb2_grpc.MerakScenarioServiceAsyncStub, scenario_id: str) -> None:
    request = scenario_pb2.WatchScenarioRequest(scenario_id=scenario_id)
    async for _ in stub.WatchScenario(request, timeout=90):
        pass


async def test_a_scenario_whose_topology_is_gone_is_reconciled(
    temporal_services: ServiceStack, redis_client: aioredis.Redis
) -> None:
    services = temporal_services
    await services.everything(teardown_timeout=60, watch_interval=0.2)
    manager: ScenarioManager = services.built["scenario"].root
    async with (
        grpc.aio.insecure_channel(services.addresses["scenario"]) as channel,
        grpc.aio.insecure_channel(services.addresses["topology"]) as topology_channel,
    ):
        stub = scenario_pb2_grpc.MerakScenarioServiceStub(channel)
        created = await create_scenario(
            stub,
            topology=topology_config(vhosts=2, racks=1, per_rack=2, ports=4, cidr="10.223.0.0/16"),
            compute=compute_config(nodes=2, vms_per_vpc=4),
        )
        sid = created.scenario.id
        for service in (TOPOLOGY, NETWORK, COMPUTE):
            await act(stub, sid, service, scenario_pb2.DEPLOY)
            await _settle(stub, sid)
        deployed = await stub.GetScenario(scenario_pb2.GetRequest(id=sid))
        assert (deployed.topology_status, deployed.compute_status) == (scenario_pb2.READY, scenario_pb2.READY)
        assert await redis_client.keys("merak:compute:*")
        allocated = (await act(stub, sid, NETWORK, scenario_pb2.CHECK)).network.vpcs[0].subnets[0].allocated
        assert allocated == 4

        # What `merak down` does: the topology is deleted through its own service, the scenario not told.
        await topology_pb2_grpc.MerakTopologyServiceStub(topology_channel).TopologyHandler(
            topology_pb2.InternalTopologyInfo(
                operation_type=common_pb2.DELETE,
                config=topology_pb2.InternalTopologyConfiguration(topology_id=created.topology.id),
            )
        )
        assert await manager.reconcile() == [sid]
        now = await stub.GetScenario(scenario_pb2.GetRequest(id=sid))
        assert (now.topology_status, now.compute_status) == (scenario_pb2.NONE, scenario_pb2.NONE)
        assert (now.network_status, now.status) == (scenario_pb2.READY, now.status)
        assert await redis_client.keys("merak:compute:*") == []  # the VMs' records went
        freed = (await act(stub, sid, NETWORK, scenario_pb2.CHECK)).network.vpcs[0].subnets[0].allocated
        assert freed == 0  # and their addresses
        assert await manager.reconcile() == []  # nothing left to do

        await stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=sid, teardown=True))


async def test_a_fault_schedule_cut_short_by_a_restart_is_healed_at_start(
    temporal_services: ServiceStack, redis_client: aioredis.Redis
) -> None:
    services = temporal_services
    await services.everything(teardown_timeout=60, watch_interval=0.2)
    running: ScenarioManager = services.built["scenario"].root
    test = pingall_config()
    test.fault_schedule.add(
        name="long", duration_seconds=600, link=topology_pb2.LinkFault(node="vhost-1", down=True)
    )
    test.fault_schedule.add(
        name="held", partition=topology_pb2.Partition(side_a=["vhost-0"], side_b=["vhost-1"])
    )
    async with (
        grpc.aio.insecure_channel(services.addresses["scenario"]) as channel,
        grpc.aio.insecure_channel(services.addresses["topology"]) as topology_channel,
    ):
        stub = scenario_pb2_grpc.MerakScenarioServiceStub(channel)
        topology = topology_pb2_grpc.MerakTopologyServiceStub(topology_channel)
        created = await create_scenario(
            stub,
            topology=topology_config(vhosts=2, racks=1, per_rack=2, ports=4, cidr="10.224.0.0/16"),
            compute=compute_config(nodes=2, vms_per_vpc=4),
            test=test,
        )
        sid, topology_id = created.scenario.id, created.topology.id
        for service in (TOPOLOGY, NETWORK, COMPUTE):
            await act(stub, sid, service, scenario_pb2.DEPLOY)
            if service != COMPUTE:
                await _settle(stub, sid)
        listed = topology_pb2.ListFaultsRequest(topology_id=topology_id)

        async def both_on() -> topology_pb2.FaultsReply | None:
            # On in the lab, and recorded as started: the run saves its record after the lab took them.
            now = await topology.ListFaults(listed)
            raw = await redis_client.get(f"merak:scenario:faults:{sid}")
            recorded = raw is not None and all(w["start"] for w in json.loads(raw)["windows"].values())
            return now if len(now.links) == 1 and len(now.partitions) == 1 and recorded else None

        on: topology_pb2.FaultsReply = await assert_eventually(both_on, timeout=30)
        assert on.links[0].down

        # The service that ran it is gone (as after SIGKILL); the next one, starting, heals the lab.
        restarted = ScenarioManager(
            running.store, running.clients, running.settings, ScenarioMetrics.create(CollectorRegistry())
        )
        assert await restarted.heal_abandoned() == [sid]
        now = await topology.ListFaults(listed)
        assert not now.links and not now.partitions
        raw = await redis_client.get(f"merak:scenario:faults:{sid}")
        assert raw is not None
        record = json.loads(raw)
        assert not record["running"]
        assert all(w["end"] and "restarted" in w["error"] for w in record["windows"].values())
        assert await restarted.heal_abandoned() == []

        await running.stop_faults(sid, heal=False)
        await stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=sid, teardown=True), timeout=120)
