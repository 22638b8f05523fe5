"""The stand-in's timer: deadlines kept in their order and never early; an answer held for its latency."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from functools import partial

from merak_tools.alcor_standin import FakeAlcor
from merak_tools.alcor_standin.timer import PreciseTimer


async def test_deadlines_are_called_in_order_and_never_before_their_time() -> None:
    loop = asyncio.get_running_loop()
    timer = PreciseTimer(loop)
    called: list[tuple[int, float, float]] = []
    all_called = asyncio.Event()
    start = time.perf_counter()
    offsets = [0.03, 0.01, 0.02, -1.0, 0.01]

    def call(n: int, deadline: float) -> None:
        called.append((n, deadline, time.perf_counter()))
        if len(called) == len(offsets):
            all_called.set()

    try:
        for n, offset in enumerate(offsets):
            timer.call_at(start + offset, partial(call, n, start + offset))
        await asyncio.wait_for(all_called.wait(), timeout=10)
    finally:
        timer.close()
    # A past deadline first, then the others in their order (equal ones as they came).
    assert [n for n, _, _ in called] == [3, 1, 4, 2, 0]
    assert all(at >= deadline for _, deadline, at in called)


def test_an_answer_is_held_for_the_latency_from_its_arrival() -> None:
    alcor = FakeAlcor(record=False, southbound=False, latency=0.02)
    try:
        urllib.request.urlopen(f"{alcor.url}/project/p/ports/missing", timeout=10)
    except urllib.error.HTTPError as missing:
        assert missing.code == 404
    finally:
        alcor.stop()
    [(_, method, service, held)] = alcor.state.times
    assert (method, service) == ("GET", "port") and held >= 0.02
