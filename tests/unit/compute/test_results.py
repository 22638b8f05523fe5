"""The control plane's results: percentiles, codes, errors, rates and series from kept samples."""

from __future__ import annotations

from services.compute import results
from services.compute.results import CallSample


def test_results_summarise_each_operation_and_the_time_to_ready() -> None:
    calls = [CallSample("alcor", "create_port", "201", 0.001 * (i + 1), at=i * 0.1) for i in range(100)]
    calls += [CallSample("alcor", "bind_port", "200", 0.002, at=5.0)] * 9
    calls += [CallSample("alcor", "bind_port", "503", 0.5, at=5.5)]
    ready = [1.0 + 0.05 * i for i in range(100)]
    built = results.build(
        "cc-1", plugin="alcor", operation="CREATE", vms=100, requested_rps=0.0, calls=calls, ready=ready
    )
    ops = {op.operation: op for op in built.operations}
    create, bind = ops["create_port"], ops["bind_port"]
    assert (create.requests, dict(create.codes), create.errors) == (100, {"201": 100}, 0)
    assert (create.latency.p50_ms, create.latency.p99_ms, create.latency.max_ms) == (50.0, 99.0, 100.0)
    assert create.rate == round(100 / 9.9, 3)
    assert (bind.requests, dict(bind.codes), bind.errors) == (10, {"200": 9, "503": 1}, 1)
    assert (built.vms, built.vms_ready) == (100, 100)
    assert built.time_to_ready.p50_ms == 3450.0 and built.achieved_vms_per_second == round(100 / 5.95, 3)
    # A run of ten seconds: a point per 0.1 s (rates still per second): VMs ready, errors, and the
    # latency of the calls of each interval.
    assert built.interval_seconds == 0.1 and len(built.ready_per_second) == 100
    assert round(sum(p.value * 0.1 for p in built.ready_per_second)) == 100
    assert [(p.second, p.value) for p in built.errors_per_second if p.value] == [(5.5, 10.0)]
    assert [p.second for p in built.latency_p50_ms[:3]] == [0.0, 0.1, 0.2]
    assert [p.value for p in built.latency_p50_ms[:3]] == [1.0, 2.0, 3.0]
    # Each operation's latency distribution, counted from the samples when no histogram is given.
    assert sum(b.count for b in create.histogram) == 100
    assert [(b.upper_ms, b.count) for b in bind.histogram] == [(2.51189, 9), (501.187, 1)]
    assert (
        bind.histogram[0].lower_ms == 1.99526 and sum(b.count for b in built.time_to_ready_histogram) == 100
    )


def test_the_store_histograms_are_the_distributions() -> None:
    calls = [CallSample("native", "allocate_ports", "OK", 0.001, at=0.5)]
    one_ms = results.histogram_bucket(0.001)
    built = results.build(
        "cc", plugin="native", operation="CREATE", vms=3, requested_rps=0, calls=calls, ready=[0.5],
        histograms={("native", "allocate_ports"): {one_ms: 7, one_ms + 10: 2, 5: 0}},
        ready_histogram={results.histogram_bucket(0.5): 3},
    )  # fmt: skip
    op = built.operations[0]
    assert [(b.lower_ms, b.upper_ms, b.count) for b in op.histogram] == [
        (0.794328, 1.0, 7),
        (7.94328, 10.0, 2),
    ]
    assert [(b.upper_ms, b.count) for b in built.time_to_ready_histogram] == [(501.187, 3)]


def test_histogram_buckets_are_log_spaced_and_bounded() -> None:
    bounds = results.HISTOGRAM_BOUNDS_MS
    assert (bounds[0], bounds[10], bounds[20], bounds[-1]) == (0.01, 0.1, 1.0, 1e8)
    assert results.histogram_bucket(0.0) == 0 and results.histogram_bucket(1e9) == len(bounds) - 1
    assert bounds[results.histogram_bucket(0.001)] == 1.0  # at most the upper bound
    assert bounds[results.histogram_bucket(0.0010001)] == 1.25893


def test_the_interval_suits_the_length_of_the_run() -> None:
    assert [results.interval_ms(s) for s in (0, 3, 29.9, 30, 60, 300, 3600)] == [
        100, 100, 100, 200, 500, 2000, 20000,
    ]  # fmt: skip
    # A run of a few seconds shows several points, at fractional seconds.
    built = results.build(
        "cc", plugin="native", operation="CREATE", vms=4, requested_rps=0, calls=[],
        ready=[0.3, 0.3, 1.2, 2.0],
    )  # fmt: skip
    assert [(p.second, p.value) for p in built.ready_per_second if p.value] == [
        (0.3, 20),
        (1.2, 10),
        (2.0, 10),
    ]
    assert len(built.ready_per_second) == 21


def test_no_samples_no_series_and_bad_samples_are_skipped() -> None:
    built = results.build(
        "cc", plugin="native", operation="CREATE", vms=0, requested_rps=5, calls=[], ready=[]
    )
    assert list(built.operations) == [] and list(built.ready_per_second) == []
    assert built.requested_rps == 5 and built.time_to_ready.count == 0
    assert results.parse_call("native|allocate_ports|OK|0.01|1.5") == CallSample(
        "native", "allocate_ports", "OK", 0.01, 1.5
    )
    assert results.parse_call("broken") is None and results.parse_call("a|b|c|x|1") is None


def test_long_runs_keep_at_most_max_points() -> None:
    ready = [float(i) for i in range(0, 3600, 2)]
    built = results.build(
        "cc", plugin="native", operation="CREATE", vms=1800, requested_rps=0, calls=[], ready=ready
    )
    assert len(built.ready_per_second) <= results.MAX_POINTS and built.interval_seconds == 20
    assert sum(p.value * 20 for p in built.ready_per_second) == 1800  # 20-second intervals


def test_churn_newborns_count_as_ready_per_second_not_as_the_operations_vms() -> None:
    result = results.build(
        "c1", plugin="native", operation="CREATE", vms=4, requested_rps=0, calls=[],
        ready=[0.5, 0.5, 0.5, 0.5], population=[(1.2, 4), (1.3, 5), (2.2, 4), (2.4, 6), (2.5, 4)],
        born=[1.3, 2.4, 2.4],
    )  # fmt: skip
    assert result.vms_ready == 4 and result.time_to_ready.max_ms == 500
    ready = [(p.second, p.value) for p in result.ready_per_second if p.value]
    assert ready == [(0.5, 40), (1.3, 10), (2.4, 20)]  # per second, over intervals of 0.1 s
    assert (result.population_min, result.population_max) == (4, 6)
    assert [(p.second, p.value) for p in result.population] == [
        (1.2, 4),
        (1.3, 5),
        (2.2, 4),
        (2.4, 6),
        (2.5, 4),
    ]
    # The most per interval, on a longer run.
    longer = results.build(
        "c1", plugin="native", operation="CREATE", vms=4, requested_rps=0, calls=[], ready=[100.0],
        population=[(1.2, 4), (1.3, 5), (2.2, 4), (2.4, 6), (2.5, 4)],
    )  # fmt: skip
    assert [(p.second, p.value) for p in longer.population] == [(1.0, 5), (2.0, 6), (2.5, 4)]


def test_a_latency_summary_carries_p95() -> None:
    summary = results.summary([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert (summary.p50_ms, summary.p90_ms, summary.p95_ms, summary.p99_ms, summary.max_ms) == (
        50,
        90,
        95,
        99,
        100,
    )
