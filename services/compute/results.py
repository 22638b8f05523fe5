"""The control plane's results of a compute config, from the kept calls and VM ready times; no I/O."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from merak.stats import Summary, percentile
from merak.v1 import compute_pb2

# Codes that are answers, not failures.
SUCCESS_CODES = frozenset({"OK", "200", "201", "204"})
# At most this many points per time series (buckets widen for long runs).
MAX_POINTS = 600


@dataclass(frozen=True, slots=True)
class CallSample:
    """One kept call: which plugin and operation, its code, how long, when (seconds since start)."""

    plugin: str
    operation: str
    code: str
    seconds: float
    at: float


def parse_call(raw: str) -> CallSample | None:
    """A kept call ("plugin|operation|code|seconds|at"), or None for a malformed one."""
    parts = raw.split("|")
    if len(parts) != 5:
        return None
    try:
        return CallSample(parts[0], parts[1], parts[2], float(parts[3]), float(parts[4]))
    except ValueError:
        return None


def summary(seconds: Sequence[float]) -> compute_pb2.LatencySummary:
    """Count and p50/p90/p99/max, in milliseconds."""
    of = Summary.of(seconds)
    return compute_pb2.LatencySummary(
        count=of.count,
        p50_ms=round(of.p50 * 1000, 3),
        p90_ms=round(of.p90 * 1000, 3),
        p99_ms=round(of.p99 * 1000, 3),
        max_ms=round(of.max * 1000, 3),
    )


def _bucket_width(span: float) -> float:
    return max(1.0, math.ceil(span / MAX_POINTS))


def build(
    config_id: str,
    *,
    plugin: str,
    operation: str,
    vms: int,
    requested_rps: float,
    calls: Sequence[CallSample],
    ready: Sequence[float],
    population: Sequence[tuple[float, int]] = (),
    born: Sequence[float] = (),
) -> compute_pb2.ComputeResults:
    """Per operation: requests, codes, errors, latency, rate; time to ready; series over time."""
    result = compute_pb2.ComputeResults(
        compute_config_id=config_id,
        plugin=plugin,
        operation=operation,
        vms=vms,
        vms_ready=len(ready),
        requested_rps=requested_rps,
        time_to_ready=summary(ready),
    )
    if ready:
        result.achieved_vms_per_second = round(len(ready) / max(*ready, 1e-3), 3)
    by_operation: dict[tuple[str, str], list[CallSample]] = defaultdict(list)
    for call in calls:
        by_operation[(call.plugin, call.operation)].append(call)
    for (call_plugin, name), samples in sorted(by_operation.items()):
        codes: dict[str, int] = defaultdict(int)
        for sample in samples:
            codes[sample.code] += 1
        span = max(s.at for s in samples) - min(s.at for s in samples)
        result.operations.add(
            operation=name,
            plugin=call_plugin,
            requests=len(samples),
            codes=dict(codes),
            errors=sum(n for code, n in codes.items() if code not in SUCCESS_CODES),
            latency=summary([s.seconds for s in samples]),
            rate=round(len(samples) / max(span, 1.0), 3),
        )
    end = max([*ready, *born, *(c.at for c in calls), *(at for at, _ in population), 0.0])
    width = _bucket_width(end)
    ready_counts: dict[int, int] = defaultdict(int)
    for at in [*ready, *born]:  # churn newborns are VMs made ready too
        ready_counts[int(at // width)] += 1
    latencies: dict[int, list[float]] = defaultdict(list)
    errors: dict[int, int] = defaultdict(int)
    for call in calls:
        bucket = int(call.at // width)
        latencies[bucket].append(call.seconds)
        if call.code not in SUCCESS_CODES:
            errors[bucket] += 1
    for bucket in range(int(end // width) + 1 if (ready or born or calls) else 0):
        second = bucket * width
        result.ready_per_second.add(second=second, value=ready_counts.get(bucket, 0) / width)
        result.errors_per_second.add(second=second, value=errors.get(bucket, 0) / width)
        if bucket in latencies:
            ordered = sorted(latencies[bucket])
            result.latency_p50_ms.add(second=second, value=round(percentile(ordered, 50) * 1000, 3))
    if population:
        alive = [n for _, n in population]
        result.population_min, result.population_max = min(alive), max(alive)
        most: dict[int, int] = {}
        for at, n in population:
            bucket = int(at // width)
            most[bucket] = max(most.get(bucket, 0), n)
        for bucket, n in sorted(most.items()):
            result.population.add(second=bucket * width, value=n)
    return result
