"""The shared fixtures give real parts: Redis, the Temporal dev server, network namespaces."""

from __future__ import annotations

import uuid
from datetime import timedelta

import redis.asyncio as aioredis
from pyroute2 import netns
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from merak.store import RedisStore
from tests.support.plugin import MakeNetns


@activity.defn(name="test.double")
async def double(value: int) -> int:
    """An activity that proves the worker ran it."""
    return value * 2


@workflow.defn(name="test.Double")
class DoubleWorkflow:
    """A workflow with one activity."""

    @workflow.run
    async def run(self, value: int) -> int:
        """Double `value` through an activity."""
        return await workflow.execute_activity(double, value, start_to_close_timeout=timedelta(seconds=10))


async def test_redis_is_real_and_empty(redis_client: aioredis.Redis) -> None:
    assert await redis_client.dbsize() == 0
    store = RedisStore(redis_client, "merak:test")
    await store.set_json(store.key("a", "1"), {"x": 1})
    await store.set_json(store.key("a", "2"), {"x": 2})
    await store.set_json(store.key("b"), {"x": 3})
    assert await store.get_json(store.key("a", "1")) == {"x": 1}
    assert sorted(await store.keys_under("a")) == ["merak:test:a:1", "merak:test:a:2"]
    assert await store.delete_under("a") == 2
    assert await redis_client.keys("*") == ["merak:test:b"]


async def test_temporal_dev_server_runs_a_workflow(temporal_client: Client) -> None:
    queue = f"test-{uuid.uuid4().hex}"
    async with Worker(
        temporal_client,
        task_queue=queue,
        workflows=[DoubleWorkflow],
        activities=[double],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        result = await temporal_client.execute_workflow(
            DoubleWorkflow.run, 21, id=f"wf-{uuid.uuid4().hex}", task_queue=queue
        )
    assert result == 42


def test_make_netns_creates_and_the_fixture_removes(make_netns: MakeNetns) -> None:
    first, second = make_netns(), make_netns()
    assert first != second
    assert {first, second} <= set(netns.listnetns())
