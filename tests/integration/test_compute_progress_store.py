"""Compute progress lists the unsettled hosts from an index kept by the VM writes, not by reading
every host's counts (a million VMs on 10,000 hosts were read on every progress update)."""

from __future__ import annotations

import redis.asyncio as aioredis

from merak.v1 import common_pb2
from services.compute.store import ComputeStore, VmRecord
from tests.support import unique_name

DONE, ERROR, DEPLOYING, DELETING = (
    common_pb2.DONE,
    common_pb2.ERROR,
    common_pb2.DEPLOYING,
    common_pb2.DELETING,
)


def vm(host: str, i: int, status: int, error: str = "") -> VmRecord:
    return VmRecord(
        id=f"id-{host}-{i}", name=f"{host}-vm{i}", host=host, vpc="v", subnet="s", project="p",
        tenant="t", cidr="10.0.0.0/24", gw="10.0.0.1", status=status, error=error,
    )  # fmt: skip


async def test_hosts_are_listed_while_they_hold_vms_that_are_not_done(redis_client: aioredis.Redis) -> None:
    store = ComputeStore(redis_client, prefix=unique_name("cptest:"))
    config = unique_name("cc-")
    try:
        for host in ("h1", "h2", "h3"):
            await store.vms.put(config, host, [vm(host, i, DEPLOYING) for i in range(3)])
        assert await store.progress.unsettled_hosts(config, 50) == (
            3,
            {h: {DEPLOYING: 3} for h in ("h1", "h2", "h3")},
        )
        # The first hosts by name, and how many there are in all.
        count, listed = await store.progress.unsettled_hosts(config, 2)
        assert (count, list(listed)) == (3, ["h1", "h2"])

        await store.vms.put(config, "h1", [vm("h1", i, DONE) for i in range(3)])
        await store.vms.put(config, "h1", [vm("h1", i, DONE) for i in range(3)])  # a retried write
        await store.vms.put(config, "h2", [vm("h2", 0, DONE), vm("h2", 1, ERROR, "boom"), vm("h2", 2, DONE)])
        assert await store.progress.unsettled_hosts(config, 50) == (
            2,
            {"h2": {DONE: 2, ERROR: 1}, "h3": {DEPLOYING: 3}},
        )
        await store.vms.put(config, "h3", [vm("h3", i, DONE) for i in range(3)])
        assert await store.progress.unsettled_hosts(config, 50) == (1, {"h2": {DONE: 2, ERROR: 1}})

        # A delete: a host is unsettled from the moment its VMs are being deleted until they are gone.
        await store.vms.put(config, "h1", [vm("h1", 0, DELETING)])
        assert (await store.progress.unsettled_hosts(config, 50))[1]["h1"] == {DELETING: 1, DONE: 2}
        assert await store.vms.drop(config, "h1", ["h1-vm0"]) == 1
        await store.vms.put(config, "h2", [vm("h2", i, DELETING) for i in range(3)])
        assert await store.vms.drop(config, "h2", [f"h2-vm{i}" for i in range(3)]) == 3
        assert await store.progress.unsettled_hosts(config, 50) == (0, {})
        assert await store.progress.counts(config) == {DONE: 5}
    finally:
        await store.delete(config)


async def test_a_delete_mark_sets_status_in_place_and_keeps_counts(redis_client: aioredis.Redis) -> None:
    """mark_hosts: DONE and ERROR records become DELETING (the error cleared), counts and the unsettled
    index kept exact when marked twice (a retried activity), records read back whole."""
    store = ComputeStore(redis_client, prefix=unique_name("cptest:"))
    config = unique_name("cc-")
    try:
        h1 = [vm("h1", 0, DONE), vm("h1", 1, ERROR, 'a "quoted" "status":2 error'), vm("h1", 2, DONE)]
        h2 = [vm("h2", 0, DONE)]
        await store.vms.put_hosts(config, {"h1": h1, "h2": h2})
        assert await store.progress.unsettled_hosts(config, 50) == (1, {"h1": {DONE: 2, ERROR: 1}})
        gone = vm("h2", 9, DONE)  # no record: skipped, not made
        for _ in range(2):
            marked = {"h1": [vm("h1", i, DONE) for i in range(3)], "h2": [vm("h2", 0, DONE), gone]}
            await store.vms.mark_hosts(config, marked, DELETING)
            assert {(r.status, r.error) for rs in marked.values() for r in rs} == {(DELETING, "")}
            assert await store.progress.counts(config) == {DELETING: 4}
            assert await store.progress.unsettled_hosts(config, 50) == (
                2,
                {"h1": {DELETING: 3}, "h2": {DELETING: 1}},
            )
        read = await store.vms.records(config, "h1")
        assert sorted((r.name, r.status, r.error, r.id, r.cidr) for r in read) == [
            (f"h1-vm{i}", DELETING, "", f"id-h1-{i}", "10.0.0.0/24") for i in range(3)
        ]
        assert await store.vms.records(config, "h2", ["h2-vm9"]) == []
        # Back to DONE (a delete undone): the host settles.
        await store.vms.mark_hosts(config, {"h2": [vm("h2", 0, DELETING)]}, DONE)
        assert await store.progress.unsettled_hosts(config, 50) == (1, {"h1": {DELETING: 3}})
        assert (
            await store.vms.drop_hosts(config, {"h1": [f"h1-vm{i}" for i in range(3)], "h2": ["h2-vm0"]}) == 4
        )
        assert await store.progress.unsettled_hosts(config, 50) == (0, {})
        assert await store.progress.counts(config) == {}
    finally:
        await store.delete(config)
