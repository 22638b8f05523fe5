"""Test support for Redis: another client's write dropped between a transaction's read and its EXEC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis


def write_after_first_read(
    monkeypatch: pytest.MonkeyPatch, redis: aioredis.Redis, write: Callable[[], Awaitable[Any]]
) -> list[int]:
    """After the first GET/EXISTS of a transaction's pipeline, another client runs `write` (once);
    returns a list that holds one item once it has run. What merak.store.optimistic must survive."""
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
                    await write()  # another pooled connection: the watch sees it
                return result

            setattr(pipe, name, read_then_write)
        return pipe

    monkeypatch.setattr(redis, "pipeline", pipeline)
    return writes
