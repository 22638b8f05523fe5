"""The results file's machine: this benchmark's processes told apart from the others (whose CPU is the
other load), and the machine said in one sentence."""

from __future__ import annotations

import os
import subprocess
import time

from bench.machine import OtherLoad, ProcessStat, descendants, describe, processes_now, sentence


def test_a_child_and_its_children_are_ours_and_the_rest_is_not() -> None:
    table = {
        1: ProcessStat(0, "init", 0.0, False),
        10: ProcessStat(1, "bench", 0.0, False),
        11: ProcessStat(10, "redis-server", 0.0, False),
        12: ProcessStat(11, "agent", 0.0, False),
        20: ProcessStat(1, "pytest", 0.0, False),
        21: ProcessStat(20, "redis-server", 0.0, False),
    }
    assert descendants(10, table) == {10, 11, 12}


def test_this_process_and_a_child_it_started_are_read_from_proc() -> None:
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            # A child takes its new name a moment after exec has closed the pipe its parent waits on.
            deadline = time.monotonic() + 10
            while (found := processes_now())[child.pid].name != "sleep":
                assert time.monotonic() < deadline, found[child.pid]
            assert found[os.getpid()].parent == os.getppid()
            ours = descendants(os.getpid(), found)
            assert child.pid in ours and os.getppid() not in ours
        finally:
            child.kill()


def test_the_machine_in_one_sentence() -> None:
    machine = describe() | {"date": "2026-12-08T03:30:00+00:00"}
    assert machine["cpus"] >= 1 and machine["memory_gib"] > 0 and machine["kernel"]
    quiet = OtherLoad()
    assert not quiet.seen and quiet.summary()["seen"] is False
    text = sentence(machine | {"other_load": quiet.summary()})
    assert text.startswith(f"on 2026-12-08 03:30 UTC, {machine['cpus']} CPUs (")
    assert text.endswith("; no other load seen")
    busy = OtherLoad(cpu_seconds=120.0, seconds=100.0, peak_cores=1.5, by_name={"pytest": 100.0, "sh": 0.2})
    assert busy.seen
    assert sentence(machine | {"other_load": busy.summary()}).endswith(
        "other load seen: 1.2 cores on average, 1.5 at most (pytest)"
    )
