"""A group of fake hosts is one activity (a million fake VMs were 10,000 activities each way): one
address request for all its hosts, each host's agent call side by side. A host that fails fails alone:
the others' VMs are made (or deleted) and recorded, and a retry redoes only the failed host's.

The activities run as the worker runs them (temporalio's ActivityEnvironment), on real Redis, the real
network service and real agents over gRPC; a host whose agent does not serve it is a real refusal."""

from __future__ import annotations

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, compute_pb2, network_pb2, network_pb2_grpc
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from services.compute import inventory
from services.compute.activities import ComputeActivities
from services.compute.contracts import CREATE, DELETE, BatchFailure, GroupInput
from services.compute.metrics import WorkerMetrics
from services.compute.store import ComputeStore
from tests.stack import ServiceStack
from tests.support import unique_name
from tests.support.plugin import StartServer


async def _network(address: str) -> tuple[str, inventory.SubnetRef]:
    netconfig_id = unique_name("net-")
    config = network_pb2.InternalNetConfigConfiguration(netconfig_id=netconfig_id)
    vpc = config.network.vpcs.add(tenant_id="123456789", project_id="123456789", vpc_cidr="10.1.0.0/16")
    vpc.subnets.add(subnet_cidr="10.1.0.0/16", subnet_gw="10.1.0.1", number_vms=50)
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await network_pb2_grpc.MerakNetworkServiceStub(channel).NetConfigHandler(
            network_pb2.InternalNetConfigInfo(operation_type=common_pb2.CREATE, config=config)
        )
    vpc_id, subnet_id = reply.vpcs[0].vpc_id, reply.vpcs[0].subnets[0].subnet_id
    ref = inventory.SubnetRef(0, 0, vpc_id, subnet_id, "123456789", "123456789", "10.1.0.0/16", "10.1.0.1")
    return netconfig_id, ref


async def _listed(address: str, vhost: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await agent_pb2_grpc.MerakAgentServiceStub(channel).ListVms(
            agent_pb2.ListVmsRequest(vhost=vhost)
        )
    return sorted(vm.ip for vm in reply.vms)


async def test_a_group_makes_and_deletes_its_hosts_vms_and_a_failing_host_fails_alone(
    services: ServiceStack, redis_client: aioredis.Redis, grpc_server: StartServer
) -> None:
    await services.network()
    netconfig_id, subnet = await _network(services.addresses["network"])
    first, second = AgentServicer(VhostSet.standalone("h0")), AgentServicer(VhostSet.standalone("h1"))
    store = ComputeStore(redis_client, prefix=unique_name("cptest:"))
    config_id = unique_name("cc-")
    try:
        a = await grpc_server([registration(first)])
        b = await grpc_server([registration(second)])
        # h2's endpoint is h0's agent, which does not serve it: NOT_FOUND, a refusal for good.
        endpoints = {"h0": a, "h1": b, "h2": a}
        hosts = [
            inventory.Host(n, i, e, f"192.168.0.{i + 1}", fake=True)
            for i, (n, e) in enumerate(endpoints.items())
        ]
        config = compute_pb2.InternalComputeConfiguration(
            compute_config_id=config_id, netconfig_id=netconfig_id
        )
        counts: inventory.Counts = {h.name: {subnet: 3} for h in hosts}
        await store.vms.create(
            config, hosts, counts, request_fingerprint="f", hosts_per_shard=10, batch_size=10, plugin="native"
        )
        assert await store.vms.place_pending(config_id, list(endpoints)) == 9
        async with grpc.aio.insecure_channel(services.addresses["network"]) as channel:
            network = network_pb2_grpc.MerakNetworkServiceStub(channel)
            metrics = WorkerMetrics.create(CollectorRegistry())
            activities = ComputeActivities(store, network, metrics, agent_timeout=10)
            env = ActivityEnvironment()
            group = GroupInput(config_id, list(endpoints), CREATE)
            try:
                with pytest.raises(ApplicationError) as caught:
                    await env.run(activities.create_group, group)
                assert caught.value.non_retryable, caught.value.message
                assert caught.value.message.startswith("agent CreateVms on h2: "), caught.value.message
                # h0 and h1 are made and recorded; h2's VMs wait.
                statuses = {
                    h: sorted(r.status for r in await store.vms.records(config_id, h)) for h in endpoints
                }
                done, waiting = [common_pb2.DONE] * 3, [common_pb2.DEPLOYING] * 3
                assert statuses == {"h0": done, "h1": done, "h2": waiting}
                made = {h: sorted(r.ip for r in await store.vms.records(config_id, h)) for h in ("h0", "h1")}
                assert made == {"h0": await _listed(a, "h0"), "h1": await _listed(b, "h1")}
                assert (
                    len({ip for ips in made.values() for ip in ips}) == 6
                )  # one address request, no overlap
                # A retry redoes h2 only: h0 and h1 keep their VMs and addresses.
                with pytest.raises(ApplicationError):
                    await env.run(activities.create_group, group)
                assert made == {h: sorted(r.ip for r in await store.vms.records(config_id, h)) for h in made}
                # The workflow then records h2's batch as failed, with the reason.
                failed = await env.run(
                    activities.fail_batch, BatchFailure(config_id, "h2", 0, CREATE, caught.value.message)
                )
                assert (failed.done, failed.failed) == (0, 3)
                assert await store.progress.counts(config_id) == {common_pb2.DONE: 6, common_pb2.ERROR: 3}

                # DELETE: h2's agent still refuses; h0's and h1's VMs and records go.
                with pytest.raises(ApplicationError) as caught:
                    await env.run(activities.delete_group, GroupInput(config_id, list(endpoints), DELETE))
                assert caught.value.message.startswith("agent delete on h2: "), caught.value.message
                assert (await _listed(a, "h0"), await _listed(b, "h1")) == ([], [])
                assert [await store.vms.records(config_id, h) for h in ("h0", "h1")] == [[], []]
                assert len(await store.vms.records(config_id, "h2")) == 3
                assert await store.progress.counts(config_id) == {common_pb2.DELETING: 3}
            finally:
                await activities.close()
    finally:
        await store.delete(config_id)
        await first.close()
        await second.close()
