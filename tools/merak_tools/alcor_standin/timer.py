"""Deadlines kept to tens of microseconds, for the latency the stand-in adds to its answers."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import itertools
import os
import time
from collections.abc import Callable

_libc = ctypes.CDLL(None, use_errno=True)
CLOCK_MONOTONIC = 1  # time.perf_counter()'s clock on Linux
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _checked(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class PreciseTimer:
    """Calls back on one event loop at given times (time.perf_counter()), from a timerfd the loop
    watches: the kernel wakes the loop at the earliest deadline itself.

    asyncio's own timers wake late: epoll's timeout is in whole milliseconds, rounded up (on Python 3.11
    twice), so a 20 ms sleep ended 0.7 ms late at its median, and the stand-in's answers, held for the
    latency it is asked to add, were held that much longer, which a benchmark would count as the
    emulator's. Use from the loop's thread only (Linux).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fd = _checked(
            _libc.timerfd_create(CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC), "timerfd_create"
        )
        self._watched = False
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def call_at(self, deadline: float, callback: Callable[[], None]) -> None:
        """Call `callback` at `deadline`, from the loop."""
        if not self._watched:
            self._loop.add_reader(self._fd, self._expired)
            self._watched = True
        heapq.heappush(self._due, (deadline, next(self._order), callback))
        if self._due[0][2] is callback:  # the earliest now
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        seconds, fraction = divmod(deadline, 1.0)
        when = ctypes.byref(_Itimerspec(it_value=_Timespec(int(seconds), int(fraction * 1e9))))
        _checked(_libc.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, when, None), "timerfd_settime")

    def _expired(self) -> None:
        with contextlib.suppress(BlockingIOError):  # re-armed meanwhile for a later deadline
            os.read(self._fd, 8)
        now = time.perf_counter()
        try:
            while self._due and self._due[0][0] <= now:
                heapq.heappop(self._due)[2]()
        finally:  # a callback that raised leaves the others due: the timer fires again at once
            if self._due:
                self._arm(self._due[0][0])

    def close(self) -> None:
        """Stop watching and close the timerfd (what still waits is not woken); the loop not running."""
        if self._watched:
            self._loop.remove_reader(self._fd)
            self._watched = False
        os.close(self._fd)
