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
    # One point per second: VMs ready, errors, and the latency of the calls of that second.
    assert sum(p.value for p in built.ready_per_second) == 100
    assert [p.second for p in built.errors_per_second if p.value] == [5.0]
    assert built.latency_p50_ms[0].second == 0.0 and built.latency_p50_ms[0].value > 0


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


def test_long_runs_keep_at_most_600_points() -> None:
    ready = [float(i) for i in range(0, 3600, 2)]
    built = results.build(
        "cc", plugin="native", operation="CREATE", vms=1800, requested_rps=0, calls=[], ready=ready
    )
    assert len(built.ready_per_second) <= results.MAX_POINTS
    assert sum(p.value * 6 for p in built.ready_per_second) == 1800  # 6-second buckets


def test_churn_newborns_count_as_ready_per_second_not_as_the_operations_vms() -> None:
    result = results.build(
        "c1", plugin="native", operation="CREATE", vms=4, requested_rps=0, calls=[],
        ready=[0.5, 0.5, 0.5, 0.5], population=[(1.2, 4), (1.3, 5), (2.2, 4), (2.4, 6), (2.5, 4)],
        born=[1.3, 2.4, 2.4],
    )  # fmt: skip
    assert result.vms_ready == 4 and result.time_to_ready.max_ms == 500
    assert [(p.second, p.value) for p in result.ready_per_second] == [(0, 4), (1, 1), (2, 2)]
    assert (result.population_min, result.population_max) == (4, 6)
    assert [(p.second, p.value) for p in result.population] == [(1, 5), (2, 6)]  # the most per interval
