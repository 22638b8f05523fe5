"""A function called every so often in a thread of its own while a benchmark measures: the samplers of
memory, of OVN's processes and of the other load share it."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Periodic:
    """Calls `tick` every `interval` seconds from `start()` until `stop()`, which waits for the thread."""

    def __init__(self, interval: float, tick: Callable[[], None], name: str) -> None:
        self._interval = interval
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._tick()

    def start(self) -> Periodic:
        """Start calling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop calling; returns once a call under way is over."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
