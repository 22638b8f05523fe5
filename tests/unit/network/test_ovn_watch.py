"""The ovn plugin's port watch: insert and up times, waiting, the latency histogram (no OVN: the IDL's
thread is played by a thread that calls post_up)."""

from __future__ import annotations

import asyncio
import threading
import time

from prometheus_client import CollectorRegistry, Histogram

from services.network.plugins.ovn.watch import PortWatch


def _watch() -> tuple[PortWatch, CollectorRegistry]:
    registry = CollectorRegistry()
    latency = Histogram("latency_seconds", "port up", registry=registry)
    return PortWatch(asyncio.get_running_loop(), latency), registry


async def test_up_seen_from_another_thread_ends_the_wait() -> None:
    watch, registry = _watch()
    watch.track("nc", ["p1", "p2"])
    watch.committed(["p1", "p2"], {"p1", "p2"}, time.monotonic())
    threading.Timer(0.1, watch.post_up, ["p1"]).start()
    threading.Timer(0.2, watch.post_up, ["p2"]).start()
    started = time.monotonic()
    await watch.wait(["p1", "p2"], 10)
    assert time.monotonic() - started < 5
    times = [watch.times(p) for p in ("p1", "p2")]
    assert all(t is not None and 0.05 < t.seconds < 5 for t in times)
    assert registry.get_sample_value("latency_seconds_count") == 2
    watch.post_up("p1")  # a second `up` (a port re-bound) changes nothing
    await asyncio.sleep(0.05)
    assert registry.get_sample_value("latency_seconds_count") == 2


async def test_wait_times_out_and_unwatched_ports_are_ignored() -> None:
    watch, _ = _watch()
    watch.post_up("nobody")  # not watched: nothing posted
    watch.track("nc", ["p1"])
    started = time.monotonic()
    await watch.wait(["p1", "unknown"], 0.2)
    assert 0.2 <= time.monotonic() - started < 2
    times = watch.times("p1")
    assert times is not None and times.up is None and times.seconds == 0


async def test_ports_this_process_did_not_insert() -> None:
    watch, registry = _watch()
    # Existing before this process (a restart): adopted, up with no latency to tell.
    watch.adopt("nc", "old", up=True)
    # Tracked for a transaction that found it already there: not ours either.
    watch.track("nc", ["kept"])
    watch.committed(["kept"], set(), time.monotonic())
    watch.post_up("kept")
    await asyncio.sleep(0.05)
    for name in ("old", "kept"):
        times = watch.times(name)
        assert times is not None and times.up is not None and times.seconds == 0 and not times.ours
    assert registry.get_sample_value("latency_seconds_count") == 0
    # A failed transaction forgets what it would have made; DELETE forgets the config's ports.
    watch.track("nc", ["lost"])
    watch.abandon(["lost"])
    assert watch.times("lost") is None
    watch.forget_config("nc")
    assert watch.ports == {}
