"""When each VM port went into OVN's northbound database and when it came `up` there, in memory.

The NB IDL's thread tells the watch about a port going `up` (`post_up`: the time is taken in that thread,
then handed to the event loop); the plugin records each port's insert (the commit of its transaction) and
waits on the watch. A port this process did not insert (made before a restart) is adopted: it can be
waited for, but its latency is unknown and answered as 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import Histogram


@dataclass(slots=True)
class PortTimes:
    """One port: its insert time (None: not inserted by this process, or not yet) and its `up` time."""

    netconfig_id: str
    ours: bool
    inserted: float | None = None
    up: float | None = None
    observed: bool = False

    @property
    def seconds(self) -> float:
        """From insert to up (0 when either is unknown)."""
        if self.inserted is None or self.up is None:
            return 0.0
        return max(0.0, self.up - self.inserted)


@dataclass(eq=False, slots=True)
class _Waiter:
    pending: set[str]
    done: asyncio.Event = field(default_factory=asyncio.Event)


class PortWatch:
    """The ports of one NB that this process watches, by name."""

    def __init__(self, loop: asyncio.AbstractEventLoop, latency: Histogram) -> None:
        self._loop = loop
        self._latency = latency
        # Read by the IDL thread (membership only); written on the event loop.
        self.ports: dict[str, PortTimes] = {}
        self._waiters: set[_Waiter] = set()

    # --- the IDL thread ----------------------------------------------------------------------------

    def post_up(self, name: str) -> None:
        """A watched port is `up` in the replica now (called from the IDL's thread)."""
        if name in self.ports:
            self._loop.call_soon_threadsafe(self._up, name, time.monotonic())

    # --- the event loop ----------------------------------------------------------------------------

    def track(self, netconfig_id: str, port_names: Iterable[str]) -> None:
        """Ports this process is about to insert (watched before the commit, so no `up` is missed)."""
        for name in port_names:
            self.ports.setdefault(name, PortTimes(netconfig_id, ours=True))

    def committed(self, port_names: Iterable[str], made: Collection[str], at: float) -> None:
        """The transaction that tracked `port_names` committed at `at` (monotonic), inserting `made`;
        the others existed already (kept their times, or adopted when this process had none)."""
        for name in port_names:
            times = self.ports.get(name)
            if times is None or times.inserted is not None:
                continue
            if name in made:
                times.ours, times.inserted = True, at
                self._observe(times)
            else:
                times.ours = False

    def abandon(self, port_names: Iterable[str]) -> None:
        """The transaction that tracked `port_names` failed: forget those it would have inserted."""
        for name in port_names:
            times = self.ports.get(name)
            if times is not None and times.ours and times.inserted is None:
                del self.ports[name]

    def adopt(self, netconfig_id: str, name: str, up: bool) -> None:
        """A port made before this process knew it; `up` as the replica says now."""
        times = self.ports.setdefault(name, PortTimes(netconfig_id, ours=False))
        if up and times.up is None and not times.ours:
            times.up = time.monotonic()

    def forget(self, port_names: Iterable[str]) -> None:
        """Ports removed from NB."""
        for name in port_names:
            self.ports.pop(name, None)

    def forget_config(self, netconfig_id: str) -> None:
        """Every port of a network config (deleted)."""
        self.forget([name for name, times in self.ports.items() if times.netconfig_id == netconfig_id])

    def times(self, name: str) -> PortTimes | None:
        """What is known of a port."""
        return self.ports.get(name)

    async def wait(self, port_names: Sequence[str], timeout: float) -> None:
        """Until each of these watched ports is up, at most `timeout` seconds."""
        pending = {n for n in port_names if n in self.ports and self.ports[n].up is None}
        if not pending:
            return
        waiter = _Waiter(pending)
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter.done.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)

    def seen_up(self, name: str) -> None:
        """A watched port found `up` in the replica (not through the IDL's notification)."""
        self._up(name, time.monotonic())

    def _up(self, name: str, at: float) -> None:
        times = self.ports.get(name)
        if times is None or times.up is not None:
            return
        times.up = at
        self._observe(times)
        for waiter in self._waiters:
            waiter.pending.discard(name)
            if not waiter.pending:
                waiter.done.set()

    def _observe(self, times: PortTimes) -> None:
        if times.ours and not times.observed and times.inserted is not None and times.up is not None:
            times.observed = True
            self._latency.observe(times.seconds)
