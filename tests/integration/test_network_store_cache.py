"""The network store parses a state once per stored text: compute asks for addresses per batch."""

from __future__ import annotations

import redis.asyncio as aioredis

from services.network.models import NetworkState, Node
from services.network.store import NetworkStore, state_to_json
from tests.support import unique_name


async def test_a_state_is_parsed_again_only_when_its_text_changed(redis_client: aioredis.Redis) -> None:
    store = NetworkStore(redis_client, prefix=unique_name("nstest:"))
    netconfig_id = unique_name("nc-")
    key = store._nc(netconfig_id, "state")
    assert await store.state(netconfig_id) is None
    first = NetworkState(netconfig_id, "native", (), nodes=(Node("n0", "vhost-0", "10.0.0.2", "", "", ""),))
    await redis_client.set(key, state_to_json(first))
    read = await store.state(netconfig_id)
    assert read == first
    assert await store.state(netconfig_id) is read  # the same text: not parsed again
    second = NetworkState(netconfig_id, "native", (), nodes=())
    await redis_client.set(key, state_to_json(second))
    assert await store.state(netconfig_id) == second  # a write is seen at once
    await redis_client.delete(key)
    assert await store.state(netconfig_id) is None
