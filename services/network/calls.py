"""The calls a network config's operation makes into its control plane (Alcor's REST API), kept with
the config so that a scenario's results show them beside the VMs' port calls."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

# At most this many calls are kept per network config (the oldest go first).
MAX_KEPT = 10_000


@dataclass(frozen=True, slots=True)
class ControlPlaneCall:
    """One call: its operation ("create_vpc"), code ("201", "error"), seconds, when (Unix time)."""

    operation: str
    code: str
    seconds: float
    at: float


_recording: ContextVar[list[ControlPlaneCall] | None] = ContextVar("network_calls", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[ControlPlaneCall]]:
    """Collect the calls made in this block (by this task and the tasks it starts)."""
    calls: list[ControlPlaneCall] = []
    token = _recording.set(calls)
    try:
        yield calls
    finally:
        _recording.reset(token)


def note(operation: str, code: str, seconds: float) -> None:
    """A call was answered (or failed) after `seconds`: kept when someone is recording."""
    calls = _recording.get()
    if calls is not None:
        calls.append(ControlPlaneCall(operation, code, seconds, time.time() - seconds))
