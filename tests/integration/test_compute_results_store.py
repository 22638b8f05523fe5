"""Compute's results keep latency histograms as the calls are recorded, so GetResults reads a few small
hashes for the distributions instead of every call."""

from __future__ import annotations

import redis.asyncio as aioredis

from services.compute import results
from services.compute.store import ComputeStore
from tests.support import unique_name


async def test_histograms_count_the_calls_and_ready_times_as_they_are_recorded(
    redis_client: aioredis.Redis,
) -> None:
    store = ComputeStore(redis_client, prefix=unique_name("cptest:"))
    config = unique_name("cc-")
    one_ms, ten_ms = results.histogram_bucket(0.001), results.histogram_bucket(0.01)
    await store.results.record(config, "native", [("allocate_ports", "OK", 0.001, 0.2)] * 3, [0.2, 0.2])
    await store.results.record(
        config, "native", [("allocate_ports", "OK", 0.01, 0.4), ("port_up", "error", 0.001, 0.4)], [0.4]
    )
    calls, ready = await store.results.histograms(config)
    assert calls == {
        ("native", "allocate_ports"): {one_ms: 3, ten_ms: 1},
        ("native", "port_up"): {one_ms: 1},
    }
    assert ready == {results.histogram_bucket(0.2): 2, results.histogram_bucket(0.4): 1}
    # The samples are kept as before, and the results agree with the histograms.
    raw_calls, offsets = await store.results.calls_and_ready(config)
    assert len(raw_calls) == 5 and offsets == [0.2, 0.2, 0.4]


async def test_a_histogram_restarts_with_the_samples_it_counts(redis_client: aioredis.Redis) -> None:
    store = ComputeStore(redis_client, prefix=unique_name("cptest:"))
    config = unique_name("cc-")
    await store.results.record(config, "native", [("allocate_ports", "OK", 0.001, 0.2)] * 4, [0.2])
    # An UPDATE starts its results afresh: store.vms drops the samples (calls, ready).
    await redis_client.delete(
        store.results.config_key(config, "calls"), store.results.config_key(config, "ready")
    )
    await store.results.record(config, "native", [("allocate_ports", "OK", 0.01, 0.3)], [0.3])
    calls, ready = await store.results.histograms(config)
    assert calls == {("native", "allocate_ports"): {results.histogram_bucket(0.01): 1}}
    assert ready == {results.histogram_bucket(0.3): 1}
    # Deleting the config takes the histograms too.
    await store.results.delete_config(config)
    assert await store.results.histograms(config) == ({}, {})


async def test_past_the_sample_cap_the_counts_stay_exact_and_the_samples_bounded(
    redis_client: aioredis.Redis,
) -> None:
    # A million VMs cannot be read back at every GetResults: past `sample_cap` the samples are a uniform
    # reservoir, and requests, codes, errors, extremes, VMs ready and the series come from aggregates.
    store = ComputeStore(redis_client, prefix=unique_name("cptest:"))
    store.results.sample_cap = 200
    config = unique_name("cc-")
    for batch in range(10):  # 2,000 calls, 1,000 ready times; call i takes i/2000 s
        calls = [
            ("create_port", "201" if i % 100 else "error", i / 2000, batch + 0.05)
            for i in range(batch * 200, batch * 200 + 200)
        ]
        await store.results.record(config, "alcor", calls, [batch + 0.05 + j / 1000 for j in range(100)])
    raw_calls, ready = await store.results.calls_and_ready(config)
    assert len(raw_calls) == 200 and len(ready) == 200
    # Every batch is in the sample (a uniform one keeps ~20 of each batch's 200 calls; the last batch
    # too, not only the first 200 recorded).
    sampled = [c for c in (results.parse_call(raw) for raw in raw_calls) if c is not None]
    assert {c.at for c in sampled} == {batch + 0.05 for batch in range(10)}
    aggregates = await store.results.aggregates(config)
    built = results.build(
        config,
        plugin="alcor",
        operation="CREATE",
        vms=1000,
        requested_rps=0,
        calls=sampled,
        ready=ready,
        aggregates=aggregates,
    )
    (operation,) = built.operations
    assert (operation.requests, operation.errors, dict(operation.codes)) == (
        2000,
        20,
        {"201": 1980, "error": 20},
    )
    assert operation.latency.count == 2000 and operation.latency.max_ms == 999.5
    assert 300 < operation.latency.p50_ms < 700  # the sample's median of a uniform 0-1 s
    assert built.vms_ready == 1000 and built.time_to_ready.count == 1000
    assert built.time_to_ready.max_ms == 9149.0
    assert sum(p.value for p in built.ready_per_second) * built.interval_seconds == 1000
    assert sum(p.value for p in built.errors_per_second) * built.interval_seconds == 20
