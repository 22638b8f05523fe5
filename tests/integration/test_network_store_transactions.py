"""The network store's transactions when another client writes a watched key between read and EXEC."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from merak.errors import FailedPrecondition
from merak.v1 import network_pb2
from services.network.models import NetworkState, Node
from services.network.store import NetworkStore, state_to_json
from tests.support import unique_name
from tests.support.redis import write_after_first_read


def _config(netconfig_id: str) -> network_pb2.InternalNetConfigConfiguration:
    return network_pb2.InternalNetConfigConfiguration(netconfig_id=netconfig_id)


def _state(netconfig_id: str, nodes: int = 0) -> NetworkState:
    return NetworkState(
        netconfig_id,
        "native",
        (),
        nodes=tuple(Node(f"n{i}", f"vhost-{i}", f"10.0.0.{i + 2}", "", "", "") for i in range(nodes)),
    )


@pytest.fixture
def store(redis_client: aioredis.Redis) -> NetworkStore:
    return NetworkStore(redis_client, prefix=unique_name("nstx:"))


async def test_create_answers_false_on_a_conflict_and_writes_nothing(
    store: NetworkStore, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = unique_name("nc-")
    config_key = store._nc(nc, "config")
    writes = write_after_first_read(monkeypatch, redis_client, lambda: redis_client.set(config_key, "{}"))
    assert await store.create(_config(nc), _state(nc), []) is False
    assert writes == [1]
    assert await redis_client.get(store._nc(nc, "state")) is None
    assert await store.ids() == []


async def test_create_answers_false_when_the_config_exists(store: NetworkStore) -> None:
    nc = unique_name("nc-")
    assert await store.create(_config(nc), _state(nc), []) is True
    assert await store.create(_config(nc), _state(nc, nodes=1), []) is False
    assert await store.state(nc) == _state(nc)


async def test_replace_refuses_a_changed_state_and_a_conflict(
    store: NetworkStore, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = unique_name("nc-")
    old, new = _state(nc), _state(nc, nodes=2)
    assert await store.create(_config(nc), old, [])
    with pytest.raises(FailedPrecondition, match="changed during the UPDATE"):
        await store.replace(_config(nc), _state(nc, nodes=1), new, [])
    state_key = store._nc(nc, "state")
    theirs = state_to_json(old)
    writes = write_after_first_read(monkeypatch, redis_client, lambda: redis_client.set(state_key, theirs))
    with pytest.raises(FailedPrecondition, match="changed during the UPDATE"):
        await store.replace(_config(nc), old, new, [])
    assert writes == [1]
    assert await store.state(nc) == old
    monkeypatch.undo()
    await store.replace(_config(nc), old, new, [])
    assert await store.state(nc) == new


async def test_delete_tries_again_after_a_conflict(
    store: NetworkStore, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    nc = unique_name("nc-")
    state = _state(nc, nodes=1)
    assert await store.create(_config(nc), state, [])
    state_key, theirs = store._nc(nc, "state"), state_to_json(state)
    writes = write_after_first_read(monkeypatch, redis_client, lambda: redis_client.set(state_key, theirs))
    assert await store.delete(nc) == state
    assert writes == [1]
    assert await redis_client.keys(f"{store.prefix}:*") == []
    assert await store.delete(nc) is None
