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
