"""teste2e's progress off a terminal (a log, CI, `make bench-million | tee`): a plain line at most every
so often while a phase runs, and its last counts when it ends; on a terminal, a live bar and no such lines."""

from __future__ import annotations

import io

from rich.console import Console

from merak.v1 import compute_pb2
from merak_tools.teste2e.flow import vms_left
from merak_tools.teste2e.progress import PhaseBar


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_a_line_every_ten_seconds_and_one_at_the_end() -> None:
    out, clock = io.StringIO(), Clock()
    console = Console(file=out, force_terminal=False, width=200)
    with PhaseBar(console, "compute", every=10.0, clock=clock) as bar:
        for second in range(25):
            clock.now = 100.0 + second
            bar.update(total=1_000_000, completed=second * 40_000)
        clock.now = 130.0
        bar.update(completed=1_000_000)

    assert out.getvalue().splitlines() == [
        "compute: started, 0s",
        "compute: 400,000 of 1,000,000 (40%), 10s",
        "compute: 800,000 of 1,000,000 (80%), 20s",
        "compute: 1,000,000 of 1,000,000 (100%), 30s",  # and the end says nothing new
    ]


def test_the_end_is_said_when_the_last_line_was_older() -> None:
    out, clock = io.StringIO(), Clock()
    with PhaseBar(Console(file=out, force_terminal=False), "compute", clock=clock) as bar:
        bar.update(total=10, completed=2)
        clock.now = 103.0
        bar.update(completed=10)
    assert out.getvalue().splitlines() == ["compute: started, 0s", "compute: 10 of 10 (100%), 3s"]


def test_a_phase_with_no_total_yet_says_it_started_and_a_new_description_shows() -> None:
    out, clock = io.StringIO(), Clock()
    with PhaseBar(Console(file=out, force_terminal=False), "teardown", clock=clock) as bar:
        clock.now = 160.0
        bar.update(total=50, completed=20, description="teardown: VMs deleted")
    assert out.getvalue().splitlines() == [
        "teardown: started, 0s",
        "teardown: VMs deleted: 20 of 50 (40%), 60s",
    ]


def test_on_a_terminal_the_bar_prints_no_plain_line() -> None:
    out = io.StringIO()
    with PhaseBar(Console(file=out, force_terminal=True, width=120), "compute") as bar:
        bar.update(total=10, completed=10)
    assert "compute" in out.getvalue() and "10/10" in out.getvalue()
    assert "of 10 (" not in out.getvalue()


def test_vms_left_are_those_with_a_record_whatever_their_status() -> None:
    progress = compute_pb2.ComputeProgress(total=100, deleting=30, done=15, error=5, none=1)
    assert vms_left(progress) == 51
