"""The control plane's results of a compute config, from the kept calls and VM ready times; no I/O."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from merak.callstats import (
    HISTOGRAM_BOUNDS_MS,
    SUCCESS_CODES,
    bucket_counts,
    histogram,
    histogram_bucket,
    operation_results,
    summary,
)
from merak.stats import percentile
from merak.v1 import compute_pb2

__all__ = ["HISTOGRAM_BOUNDS_MS", "CallSample", "build", "histogram_bucket", "parse_call", "summary"]

# At most this many points per time series: the interval is the narrowest of INTERVALS_MS that keeps
# the run within it (0.1 s up to 30 s, 1 s up to 300 s, ...).
MAX_POINTS = 300
INTERVALS_MS = tuple(int(m * 10**e) for e in range(2, 7) for m in (1, 2, 5))


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


def interval_ms(span: float) -> int:
    """The series' interval, in milliseconds, for a run of `span` seconds."""
    for width in INTERVALS_MS:
        if span * 1000 / width < MAX_POINTS:
            return width
    return INTERVALS_MS[-1]


def _interval_of(at: float, width_ms: int) -> int:
    # Offsets are kept to the millisecond: whole milliseconds divide exactly (0.3 // 0.1 is 2.0).
    return round(at * 1000) // width_ms


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
    histograms: Mapping[tuple[str, str], Mapping[int, int]] | None = None,
    ready_histogram: Mapping[int, int] | None = None,
) -> compute_pb2.ComputeResults:
    """Per operation: requests, codes, errors, latency and its distribution, rate; time to ready; series
    over time. `histograms` (per (plugin, operation)) and `ready_histogram` are the store's running
    counts per bucket; without them they are counted here from the samples."""
    result = compute_pb2.ComputeResults(
        compute_config_id=config_id,
        plugin=plugin,
        operation=operation,
        vms=vms,
        vms_ready=len(ready),
        requested_rps=requested_rps,
        time_to_ready=summary(ready),
    )
    if ready_histogram is None:
        ready_histogram = bucket_counts(ready)
    result.time_to_ready_histogram.extend(histogram(ready_histogram))
    if ready:
        result.achieved_vms_per_second = round(len(ready) / max(*ready, 1e-3), 3)
    by_operation: dict[tuple[str, str], list[CallSample]] = defaultdict(list)
    for call in calls:
        by_operation[(call.plugin, call.operation)].append(call)
    for (call_plugin, name), samples in sorted(by_operation.items()):
        result.operations.append(
            operation_results(
                call_plugin,
                name,
                [(c.code, c.seconds, c.at) for c in samples],
                histograms.get((call_plugin, name), {}) if histograms is not None else None,
            )
        )
    _series(result, calls=calls, ready=ready, born=born, population=population)
    return result


def _series(
    result: compute_pb2.ComputeResults,
    *,
    calls: Sequence[CallSample],
    ready: Sequence[float],
    born: Sequence[float],
    population: Sequence[tuple[float, int]],
) -> None:
    """VMs ready, latency p50 and errors per interval, and the population, on intervals that suit the
    run's length."""
    end = max([*ready, *born, *(c.at for c in calls), *(at for at, _ in population), 0.0])
    width_ms = interval_ms(end)
    width = width_ms / 1000
    result.interval_seconds = width
    ready_counts: dict[int, int] = defaultdict(int)
    for at in [*ready, *born]:  # churn newborns are VMs made ready too
        ready_counts[_interval_of(at, width_ms)] += 1
    latencies: dict[int, list[float]] = defaultdict(list)
    errors: dict[int, int] = defaultdict(int)
    for call in calls:
        bucket = _interval_of(call.at, width_ms)
        latencies[bucket].append(call.seconds)
        if call.code not in SUCCESS_CODES:
            errors[bucket] += 1
    for bucket in range(_interval_of(end, width_ms) + 1 if (ready or born or calls) else 0):
        second = bucket * width_ms / 1000
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
            bucket = _interval_of(at, width_ms)
            most[bucket] = max(most.get(bucket, 0), n)
        for bucket, n in sorted(most.items()):
            result.population.add(second=bucket * width_ms / 1000, value=n)
