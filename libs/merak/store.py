"""Redis store base: one connection pool per process, keys built under a per-service prefix."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from merak.errors import Unavailable

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
T = TypeVar("T")


def connect_redis(url: str, *, max_connections: int = 256) -> aioredis.Redis:
    """A Redis client for `url` that returns str values; connects lazily."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        health_check_interval=30,
        socket_connect_timeout=5,
        # A pooled connection to a Redis that restarted fails its next command ("Connection closed
        # by server"): the command is sent again on a new connection (3 times, 50 ms to 0.5 s apart).
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return client


class RedisStore:
    """Base of every service's store: owns the key prefix; subclasses own the key layout."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix.rstrip(":")

    def key(self, *parts: str) -> str:
        """`merak:<service>:<part>:<part>…`."""
        return ":".join((self.prefix, *parts))

    async def ping(self) -> None:
        """Raise Unavailable unless Redis answers."""
        try:
            await self.redis.ping()
        except REDIS_ERRORS as exc:
            raise Unavailable(f"redis is unreachable: {exc}") from exc

    async def get_json(self, key: str) -> Any | None:
        """The JSON value at `key`, or None."""
        raw = await self.redis.get(key)
        return None if raw is None else json.loads(raw)

    async def set_json(self, key: str, value: Any) -> None:
        """Store `value` as JSON at `key`."""
        await self.redis.set(key, json.dumps(value, separators=(",", ":"), sort_keys=True))

    async def hash_of(self, key: str) -> dict[str, str]:
        """HGETALL as str → str (the client decodes responses)."""
        raw = await self.redis.hgetall(key)
        return {str(k): str(v) for k, v in raw.items()}

    async def keys_under(self, *parts: str) -> list[str]:
        """Every key under `prefix:parts…:` (SCAN, never KEYS)."""
        pattern = self.key(*parts, "*")
        return [k async for k in self.redis.scan_iter(match=pattern, count=1000)]

    async def delete_under(self, *parts: str) -> int:
        """Delete every key under `prefix:parts…:`; returns how many went."""
        deleted = 0
        batch: list[str] = []
        async for k in self.redis.scan_iter(match=self.key(*parts, "*"), count=1000):
            batch.append(k)
            if len(batch) >= 1000:
                deleted += await self.redis.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await self.redis.unlink(*batch)
        return deleted


async def optimistic(
    redis: aioredis.Redis,
    keys: Sequence[str],
    body: Callable[[Pipeline], Awaitable[T]],
    *,
    on_conflict: Callable[[], T] | None = None,
) -> T:
    """Redis's optimistic transaction: WATCH `keys`, run `body`, EXEC; again from the top on a conflict.

    `body` reads through the pipeline (it may WATCH more keys), then calls `pipe.multi()` and queues
    its writes; what it returns is returned once EXEC succeeded. A body that returns without calling
    `multi()` writes nothing (the watch is dropped). When another client changed a watched key before
    EXEC, the body runs again — or, given `on_conflict`, that is called instead (it may raise).
    """
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(*keys)
                result = await body(pipe)
                if pipe.explicit_transaction:
                    await pipe.execute()
                else:
                    await pipe.unwatch()  # type: ignore[no-untyped-call]  # untyped in redis-py
                return result
            except WatchError:
                if on_conflict is not None:
                    return on_conflict()
