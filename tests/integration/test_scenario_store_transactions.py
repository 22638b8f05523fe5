"""The scenario store's transactions when another client writes a watched key between read and EXEC."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from merak.errors import AlreadyExists, FailedPrecondition
from merak.v1 import scenario_pb2
from services.scenario.models import TOPOLOGY_CONFIG
from services.scenario.store import ScenarioStore, dumps
from tests.support import unique_name
from tests.support.redis import write_after_first_read


@pytest.fixture
def store(redis_client: aioredis.Redis) -> ScenarioStore:
    return ScenarioStore(redis_client, prefix=unique_name("sstx:"))


async def test_create_sees_an_entity_written_meanwhile_and_writes_nothing(
    store: ScenarioStore, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = scenario_pb2.TopologyConfig(id=unique_name("topo-"), name="mine")
    theirs = scenario_pb2.TopologyConfig(id=config.id, name="theirs")
    key = store.entity_key(TOPOLOGY_CONFIG, config.id)
    writes = write_after_first_read(monkeypatch, redis_client, lambda: redis_client.set(key, dumps(theirs)))
    with pytest.raises(AlreadyExists):
        await store.create(TOPOLOGY_CONFIG, config)
    assert writes == [1]
    assert await store.get(TOPOLOGY_CONFIG, config.id) == theirs
    assert await store.page(TOPOLOGY_CONFIG, "", 10) == ([], "")  # not indexed by the create


async def test_modify_changes_what_was_written_meanwhile(
    store: ScenarioStore, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = scenario_pb2.TopologyConfig(id=unique_name("topo-"), name="a")
    await store.create(TOPOLOGY_CONFIG, config)
    key = store.entity_key(TOPOLOGY_CONFIG, config.id)
    theirs = scenario_pb2.TopologyConfig(id=config.id, name="b")
    writes = write_after_first_read(monkeypatch, redis_client, lambda: redis_client.set(key, dumps(theirs)))
    seen: list[str] = []

    def change(stored: scenario_pb2.TopologyConfig) -> scenario_pb2.TopologyConfig:
        seen.append(stored.name)
        stored.number_of_vhosts = 3
        return stored

    changed = await store.modify(TOPOLOGY_CONFIG, config.id, change)
    assert writes == [1]
    assert seen == ["a", "b"]  # the first EXEC failed; the change ran again on their write
    assert (changed.name, changed.number_of_vhosts) == ("b", 3)
    assert await store.get(TOPOLOGY_CONFIG, config.id) == changed


async def test_modify_without_a_change_writes_nothing(store: ScenarioStore) -> None:
    config = scenario_pb2.TopologyConfig(id=unique_name("topo-"), name="a")
    await store.create(TOPOLOGY_CONFIG, config)
    assert await store.modify(TOPOLOGY_CONFIG, config.id, lambda stored: stored) == config
    assert await store.get(TOPOLOGY_CONFIG, config.id) == config


async def test_delete_sees_a_reference_added_meanwhile(
    store: ScenarioStore, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = scenario_pb2.TopologyConfig(id=unique_name("topo-"), name="a")
    await store.create(TOPOLOGY_CONFIG, config)
    refs = store.refs_key(TOPOLOGY_CONFIG, config.id)
    writes = write_after_first_read(monkeypatch, redis_client, lambda: redis_client.sadd(refs, "scn-1"))
    with pytest.raises(FailedPrecondition, match="is used by scenario 'scn-1'"):
        await store.delete(TOPOLOGY_CONFIG, config.id)
    assert writes == [1]
    assert await store.get(TOPOLOGY_CONFIG, config.id) == config
