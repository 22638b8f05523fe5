"""A phase's progress for people: a live bar on a terminal (rich's), else a plain line now and then, so a
log (`make bench-million | tee run.log`, CI) shows how a long phase goes without a line per change."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Off a terminal, a line at most this often (and one at the end).
PLAIN_EVERY_SECONDS = 10.0


class PhaseBar:
    """Progress of one phase (`name`): counts of a total, updated as they come."""

    def __init__(
        self,
        console: Console,
        name: str,
        *,
        every: float = PLAIN_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.description = name
        self.total: int | None = None
        self.completed = 0
        self._every = every
        self._clock = clock
        self._started = clock()
        self._said_at: float | None = None
        self._said = ""
        self._live: Progress | None = None
        self._task: TaskID | None = None
        if console.is_terminal:
            self._live = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )

    def __enter__(self) -> PhaseBar:
        if self._live is not None:
            self._live.start()
            self._task = self._live.add_task(self.description, total=None)
        else:
            self._say(force=True)
        return self

    def __exit__(self, *_: object) -> None:
        if self._live is not None:
            self._live.stop()
        else:
            self._say(force=True)

    def update(
        self, *, total: int | None = None, completed: int | None = None, description: str = ""
    ) -> None:
        """New counts (or a new description); shown at once on a terminal, else in the next plain line."""
        if total is not None:
            self.total = total
        if completed is not None:
            self.completed = completed
        if description:
            self.description = description
        if self._live is not None and self._task is not None:
            self._live.update(
                self._task, total=self.total, completed=self.completed, description=self.description
            )
        else:
            self._say()

    def print(self, message: str) -> None:
        """A line of its own (rich markup), above the bar on a terminal."""
        self.console.print(message)

    def line(self) -> str:
        """The plain line: the phase, its counts and share, and how long it has run."""
        elapsed = self._clock() - self._started
        if self.total:
            share = 100 * self.completed / self.total
            counts = f"{self.completed:,} of {self.total:,} ({share:.0f}%)"
        else:
            counts = f"{self.completed:,}" if self.completed else "started"
        return f"{self.description}: {counts}, {elapsed:.0f}s"

    def _say(self, *, force: bool = False) -> None:
        now = self._clock()
        if not force and self._said_at is not None and now - self._said_at < self._every:
            return
        line = self.line()
        if line != self._said:  # the end, said already
            self._said_at, self._said = now, line
            self.console.print(line, markup=False, highlight=False)
