"""A CREATE writes its hosts with the VMs each is to get counted, not the VMs: each shard's first activity
writes them (`place_pending`), so the CREATE call costs O(hosts) whatever the number of VMs (a million
VMs took 25 s in the call)."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from merak.v1 import common_pb2, compute_pb2
from services.compute import inventory
from services.compute.store import ComputeStore
from tests.support import unique_name

SUBNETS = [
    inventory.SubnetRef(0, s, "vpc-0", f"subnet-{s}", "proj", "tenant", f"10.0.{s}.0/24", f"10.0.{s}.1")
    for s in range(2)
]


async def test_a_create_writes_hosts_and_counts_and_each_shard_writes_its_vms(
    redis_client: aioredis.Redis,
) -> None:
    store = ComputeStore(redis_client, prefix=unique_name("cptest:"))
    config_id = unique_name("cc-")
    config = compute_pb2.InternalComputeConfiguration(compute_config_id=config_id)
    config.vm_deploy.secgroups.append("sg-1")
    hosts = [inventory.Host(f"h{i}", i, f"unix:/tmp/agent-{i}.sock", f"192.168.0.{i + 1}") for i in range(5)]
    # Host 4 gets none: a host of the config with no VM on it.
    counts: inventory.Counts = {h.name: {SUBNETS[0]: 3, SUBNETS[1]: h.index} for h in hosts[:4]}
    counts["h4"] = {}
    try:
        shards = await store.vms.create(
            config, hosts, counts, request_fingerprint="f", hosts_per_shard=2, batch_size=2, plugin="native"
        )
        assert shards == 3
        # The call wrote hosts and counts, not one VM record.
        assert not await redis_client.keys(store.vms.config_key(config_id, "vms", "*"))
        assert await store.progress.counts(config_id) == {common_pb2.DEPLOYING: 18}
        assert (await store.progress.meta(config_id)).total == 18  # type: ignore[union-attr]
        assert {n: h.count for n, h in (await store.vms.hosts(config_id)).items()} == {
            "h0": 3, "h1": 4, "h2": 5, "h3": 6, "h4": 0,
        }  # fmt: skip

        # Shard 0 (h0, h1) writes its VMs; a retry writes nothing again.
        shard0 = await store.vms.shard_hosts(config_id, 0)
        assert shard0 == ["h0", "h1"]
        assert await store.vms.place_pending(config_id, shard0) == 7
        assert await store.vms.place_pending(config_id, shard0) == 0
        assert not await redis_client.exists(store.vms.config_key(config_id, "vms", "h2"))
        # What it wrote is what planning the whole config at once gives.
        expected = inventory.place(hosts, counts)
        for host in ("h0", "h1"):
            records = await store.vms.records(config_id, host)
            assert sorted((r.id, r.name, r.subnet, r.cidr, r.sgs, r.status) for r in records) == sorted(
                (vm.vm_id, vm.name, vm.subnet.subnet_id, vm.subnet.cidr, ["sg-1"], common_pb2.DEPLOYING)
                for vm in expected[host]
            )
            # Batches are ranges of the host's order, as planned.
            assert await store.vms.batch_names(config_id, host, 0, 100) == [vm.name for vm in expected[host]]
            assert await store.vms.count(config_id, host) == len(expected[host])
        # Two callers at once (a timed-out shard planning and its retry, or a CREATE's and a DELETE's):
        # each host is written by one of them only.
        both = await asyncio.gather(
            *(store.vms.place_pending(config_id, ["h2", "h3", "h4"]) for _ in range(3))
        )
        assert sum(both) == 11
        for host in ("h2", "h3"):
            assert await store.vms.count(config_id, host) == len(expected[host])
        assert not [h for h in (await store.vms.hosts(config_id)).values() if h.pending]
        # The counts were right from the start: writing the records changed none.
        assert await store.progress.counts(config_id) == {common_pb2.DEPLOYING: 18}
    finally:
        await store.delete(config_id)
    assert not await redis_client.keys(store.vms.config_key(config_id, "*"))


async def test_a_shard_planning_late_after_the_delete_writes_nothing(redis_client: aioredis.Redis) -> None:
    store = ComputeStore(redis_client, prefix=unique_name("cptest:"))
    config_id = unique_name("cc-")
    config = compute_pb2.InternalComputeConfiguration(compute_config_id=config_id)
    hosts = [inventory.Host("h0", 0, "unix:/tmp/agent-0.sock", "192.168.0.1")]
    await store.vms.create(
        config, hosts, {"h0": {SUBNETS[0]: 4}}, request_fingerprint="f", hosts_per_shard=1, batch_size=2,
        plugin="native",
    )  # fmt: skip
    pending = await store.vms.hosts_named(config_id, ["h0"])
    await store.delete(config_id)
    # The host record read before the delete is what a late attempt holds: its write finds the config gone.
    placed = await store.vms._place(config_id, pending, {"s:0:0": SUBNETS[0]}, [])
    assert placed == 0
    assert not await redis_client.keys(store.vms.config_key(config_id, "*"))
