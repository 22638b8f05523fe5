"""The control plane's results of a compute config, from the kept calls and VM ready times; no I/O."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from merak.callstats import (
    HISTOGRAM_BOUNDS_MS,
    SUCCESS_CODES,
    bucket_counts,
    histogram,
    histogram_bucket,
    summary,
)
from merak.stats import percentile
from merak.v1 import compute_pb2

__all__ = [
    "HISTOGRAM_BOUNDS_MS",
    "Aggregates",
    "CallSample",
    "OperationTotals",
    "aggregate",
    "build",
    "histogram_bucket",
    "interval_of",
    "parse_call",
    "summary",
]

# At most this many points per time series: the interval is the narrowest of INTERVALS_MS that keeps
# the run within it (0.1 s up to 30 s, 1 s up to 300 s, ...).
MAX_POINTS = 300
INTERVALS_MS = tuple(int(m * 10**e) for e in range(2, 7) for m in (1, 2, 5))
# The store counts the series per interval of this many milliseconds (every interval above is a
# multiple of it).
SERIES_RESOLUTION_MS = INTERVALS_MS[0]


@dataclass(slots=True)
class OperationTotals:
    """Every call of one (plugin, operation): how many per code, the slowest, the first and last made."""

    codes: dict[str, int] = field(default_factory=dict)
    max_seconds: float = 0.0
    first_at: float = 0.0
    last_at: float = 0.0

    @property
    def requests(self) -> int:
        """How many calls."""
        return sum(self.codes.values())


@dataclass(slots=True)
class Aggregates:
    """A config's results counted as they were recorded (store/results.py): exact, whatever the samples
    kept for the percentiles."""

    operations: dict[tuple[str, str], OperationTotals] = field(default_factory=dict)
    calls_recorded: int = 0
    ready_count: int = 0
    ready_max: float = 0.0
    # VMs ready and failed calls per interval of SERIES_RESOLUTION_MS since the operation started.
    ready_series: dict[int, int] = field(default_factory=dict)
    error_series: dict[int, int] = field(default_factory=dict)


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


def interval_of(at: float, width_ms: int) -> int:
    """The interval of `width_ms` milliseconds that offset `at` (seconds) falls in."""
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
    aggregates: Aggregates | None = None,
) -> compute_pb2.ComputeResults:
    """Per operation: requests, codes, errors, latency and its distribution, rate; time to ready; series
    over time. `histograms` (per (plugin, operation)), `ready_histogram` and `aggregates` are what the
    store counted as it recorded: with them, `calls` and `ready` may be a sample (for the percentiles
    and the latency series only); without them everything is counted here from the samples."""
    if aggregates is None:
        aggregates = aggregate(calls, ready)
    result = compute_pb2.ComputeResults(
        compute_config_id=config_id,
        plugin=plugin,
        operation=operation,
        vms=vms,
        vms_ready=aggregates.ready_count,
        requested_rps=requested_rps,
        time_to_ready=_exact(summary(ready), aggregates.ready_count, aggregates.ready_max),
    )
    if ready_histogram is None:
        ready_histogram = bucket_counts(ready)
    result.time_to_ready_histogram.extend(histogram(ready_histogram))
    if aggregates.ready_count:
        result.achieved_vms_per_second = round(aggregates.ready_count / max(aggregates.ready_max, 1e-3), 3)
    by_operation: dict[tuple[str, str], list[float]] = defaultdict(list)
    for call in calls:
        by_operation[(call.plugin, call.operation)].append(call.seconds)
    for (call_plugin, name), totals in sorted(aggregates.operations.items()):
        seconds = by_operation.get((call_plugin, name), [])
        counted = bucket_counts(seconds) if histograms is None else histograms.get((call_plugin, name), {})
        requests = totals.requests
        result.operations.append(
            compute_pb2.OperationResults(
                operation=name,
                plugin=call_plugin,
                requests=requests,
                codes=totals.codes,
                errors=sum(n for code, n in totals.codes.items() if code not in SUCCESS_CODES),
                latency=_exact(summary(seconds), requests, totals.max_seconds),
                rate=round(requests / max(totals.last_at - totals.first_at, 1.0), 3),
                histogram=histogram(counted),
            )
        )
    _series(result, aggregates, calls=calls, born=born, population=population)
    return result


def aggregate(calls: Sequence[CallSample], ready: Sequence[float]) -> Aggregates:
    """What the store counts as it records, counted from every call and ready time."""
    found = Aggregates(calls_recorded=len(calls), ready_count=len(ready), ready_max=max(ready, default=0.0))
    for call in calls:
        totals = found.operations.get((call.plugin, call.operation))
        if totals is None:
            totals = found.operations[(call.plugin, call.operation)] = OperationTotals(
                first_at=call.at, last_at=call.at
            )
        totals.codes[call.code] = totals.codes.get(call.code, 0) + 1
        totals.max_seconds = max(totals.max_seconds, call.seconds)
        totals.first_at, totals.last_at = min(totals.first_at, call.at), max(totals.last_at, call.at)
        if call.code not in SUCCESS_CODES:
            interval = interval_of(call.at, SERIES_RESOLUTION_MS)
            found.error_series[interval] = found.error_series.get(interval, 0) + 1
    for at in ready:
        interval = interval_of(at, SERIES_RESOLUTION_MS)
        found.ready_series[interval] = found.ready_series.get(interval, 0) + 1
    return found


def _exact(sampled: compute_pb2.LatencySummary, count: int, slowest: float) -> compute_pb2.LatencySummary:
    """A summary whose percentiles come from a sample, with the exact count and maximum."""
    sampled.count = count
    sampled.max_ms = round(slowest * 1000, 3)
    return sampled


def _series(
    result: compute_pb2.ComputeResults,
    aggregates: Aggregates,
    *,
    calls: Sequence[CallSample],
    born: Sequence[float],
    population: Sequence[tuple[float, int]],
) -> None:
    """VMs ready, latency p50 and errors per interval, and the population, on intervals that suit the
    run's length; counts from the aggregates (kept per SERIES_RESOLUTION_MS), the p50 from the calls."""
    last_call = max((t.last_at for t in aggregates.operations.values()), default=0.0)
    end = max([aggregates.ready_max, last_call, *born, *(at for at, _ in population), 0.0])
    width_ms = interval_ms(end)
    width = width_ms / 1000
    per = width_ms // SERIES_RESOLUTION_MS
    result.interval_seconds = width
    ready_counts: dict[int, int] = defaultdict(int)
    for fine, count in aggregates.ready_series.items():
        ready_counts[fine // per] += count
    for at in born:  # churn newborns are VMs made ready too
        ready_counts[interval_of(at, width_ms)] += 1
    errors: dict[int, int] = defaultdict(int)
    for fine, count in aggregates.error_series.items():
        errors[fine // per] += count
    latencies: dict[int, list[float]] = defaultdict(list)
    for call in calls:
        latencies[interval_of(call.at, width_ms)].append(call.seconds)
    anything = aggregates.ready_count or born or aggregates.operations
    for bucket in range(interval_of(end, width_ms) + 1 if anything else 0):
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
            bucket = interval_of(at, width_ms)
            most[bucket] = max(most.get(bucket, 0), n)
        for bucket, n in sorted(most.items()):
            result.population.add(second=bucket * width_ms / 1000, value=n)
