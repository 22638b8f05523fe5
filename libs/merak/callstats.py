"""Calls into a control plane: recorded as they are made (`recording`, `note`: the agent's port calls,
the network service's own calls into Alcor), and summed up as the results show them
(ComputeResults.operations): count, codes, errors, latency percentiles and distribution, rate; shared by
the compute service (the VMs' port calls) and the scenario service (the network config's own calls)."""

from __future__ import annotations

import contextlib
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from merak.stats import Summary
from merak.v1 import compute_pb2

# Codes that are answers, not failures.
SUCCESS_CODES = frozenset({"OK", "200", "201", "204"})
# The upper bounds of the latency histograms' buckets, in milliseconds: ten a decade from 0.01 ms to
# 10^8 ms (27 hours). Fixed, so that a histogram is counted as calls are recorded and buckets add up.
HISTOGRAM_BOUNDS_MS = tuple(float(f"{10 ** (k / 10 - 2):.6g}") for k in range(101))


@dataclass(frozen=True, slots=True)
class ControlPlaneCall:
    """One call: its operation ("create_vpc"), code ("201", "error"), seconds, when (Unix time)."""

    operation: str
    code: str
    seconds: float
    at: float


_recording: ContextVar[list[ControlPlaneCall] | None] = ContextVar("control_plane_calls", default=None)


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


def summary(seconds: Sequence[float]) -> compute_pb2.LatencySummary:
    """Count and p50/p90/p95/p99/max, in milliseconds."""
    of = Summary.of(seconds)
    return compute_pb2.LatencySummary(
        count=of.count,
        p50_ms=round(of.p50 * 1000, 3),
        p90_ms=round(of.p90 * 1000, 3),
        p99_ms=round(of.p99 * 1000, 3),
        max_ms=round(of.max * 1000, 3),
        p95_ms=round(of.p95 * 1000, 3),
    )


def histogram_bucket(seconds: float) -> int:
    """The index in HISTOGRAM_BOUNDS_MS of the bucket a latency falls in (the last for a slower one)."""
    return min(bisect_left(HISTOGRAM_BOUNDS_MS, seconds * 1000), len(HISTOGRAM_BOUNDS_MS) - 1)


def histogram(counts: Mapping[int, int]) -> list[compute_pb2.LatencyBucket]:
    """Counts per bucket index (histogram_bucket) as the buckets that hold any, fastest first."""
    return [
        compute_pb2.LatencyBucket(
            lower_ms=HISTOGRAM_BOUNDS_MS[index - 1] if index else 0.0,
            upper_ms=HISTOGRAM_BOUNDS_MS[index],
            count=count,
        )
        for index, count in sorted(counts.items())
        if count > 0 and 0 <= index < len(HISTOGRAM_BOUNDS_MS)
    ]


def bucket_counts(seconds: Sequence[float]) -> dict[int, int]:
    """How many of `seconds` fall in each histogram bucket."""
    counts: dict[int, int] = defaultdict(int)
    for value in seconds:
        counts[histogram_bucket(value)] += 1
    return counts


def operation_results(
    plugin: str,
    operation: str,
    calls: Sequence[tuple[str, float, float]],
    counted: Mapping[int, int] | None = None,
) -> compute_pb2.OperationResults:
    """One operation's calls, each (code, seconds, at): requests, codes, errors, latency, rate over their
    span (at least a second), histogram (`counted` per bucket when kept elsewhere, else from `calls`)."""
    codes: dict[str, int] = defaultdict(int)
    for code, _, _ in calls:
        codes[code] += 1
    span = max(at for _, _, at in calls) - min(at for _, _, at in calls) if calls else 0.0
    seconds = [s for _, s, _ in calls]
    return compute_pb2.OperationResults(
        operation=operation,
        plugin=plugin,
        requests=len(calls),
        codes=dict(codes),
        errors=sum(n for code, n in codes.items() if code not in SUCCESS_CODES),
        latency=summary(seconds),
        rate=round(len(calls) / max(span, 1.0), 3),
        histogram=histogram(counted if counted is not None else bucket_counts(seconds)),
    )
