"""The network store's transactions when another client writes a watched key between read and EXEC."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from merak.errors import FailedPrecondition
from merak.v1 import network_pb2
from services.network.models import NetworkState, Node
from services.network.store import NetworkStore, state_to_json
from tests.support import unique_name


def _interfere(monkeypatch: pytest.MonkeyPatch, redis: aioredis.Redis, key: str, value: str) -> list[int]:
    """After the store's first read in a transaction, another client writes `key`; returns the count."""
    real = redis.pipeline
    writes: list[int] = []

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real(*args, **kwargs)
        for name in ("get", "exists"):
            read = getattr(pipe, name)

            async def read_then_write(*keys: Any, _read: Any = read) -> Any:
                result = await _read(*keys)
                if not writes:
                    writes.append(1)
                    await redis.set(key, value)  # another pooled connection: the watch sees it
                return result

            setattr(pipe, name, read_then_write)
        return pipe

    monkeypatch.setattr(redis, "pipeline", pipeline)
    return writes


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
    writes = _interfere(monkeypatch, redis_client, store._nc(nc, "config"), "{}")
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
    writes = _interfere(monkeypatch, redis_client, state_key, state_to_json(old))
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
    writes = _interfere(monkeypatch, redis_client, store._nc(nc, "state"), state_to_json(state))
    assert await store.delete(nc) == state
    assert writes == [1]
    assert await redis_client.keys(f"{store.prefix}:*") == []
    assert await store.delete(nc) is None
