"""Test support, kept with the tests: polling with a deadline, free ports, unique names (fixtures: plugin)."""

from __future__ import annotations

import asyncio
import inspect
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from merak_tools.localstack import free_port

__all__ = ["assert_eventually", "free_port", "is_root", "unique_name"]

T = TypeVar("T")


def unique_name(prefix: str, length: int = 6) -> str:
    """A short name unlikely to collide with anything else on the machine."""
    return f"{prefix}{uuid.uuid4().hex[:length]}"


def is_root() -> bool:
    """True when this process may create network namespaces."""
    return os.geteuid() == 0


async def assert_eventually(
    check: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition not met",
) -> T:
    """Poll `check` until it returns something truthy (which is returned); fail at the deadline."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            outcome = check()
            result = await outcome if inspect.isawaitable(outcome) else outcome
            if result:
                return result
            last = None
        except AssertionError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} within {timeout}s") from last
        await asyncio.sleep(interval)
