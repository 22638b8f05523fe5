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


def stack_port_offset(base: int, slots: int = 200) -> int:
    """A port offset for a private local stack, in [base, base + 10 * slots), whose gRPC, metrics and
    REST ports nothing listens on now; the search starts at a slot derived from the pid. Fixtures that
    may run in one session (the e2e stack stays up for the whole session) get ranges that do not
    overlap, so their stacks can never take each other's ports."""
    from merak_tools.localstack import StackSettings, port_in_use  # noqa: PLC0415

    start = os.getpid() % slots
    for step in range(slots):
        offset = base + ((start + step) % slots) * 10
        settings = StackSettings(port_offset=offset, compute_workers=3)
        ports = [settings.rest_port]
        for service in ("scenario", "compute", "topology", "network", "agent"):
            ports += [settings.grpc_port(service), settings.metrics_port(service)]
        ports += [settings.metrics_port(name) for name in settings.worker_names]
        if not any(port_in_use(port) for port in ports):
            return offset
    raise RuntimeError(f"no free port offset in [{base}, {base + 10 * slots})")
