"""The README's performance table is generated from a results file: issue #31's rows in its order, a row
the file lacks said "not run", where and when it was measured said above it, and nothing outside the
markers touched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import readme, results
from bench.results import EXPECTED, Row, expected

MACHINE: dict[str, Any] = {
    "cpus": 2,
    "cpu_model": "Example CPU @ 2.20GHz",
    "memory_gib": 23.5,
    "kernel": "6.1.0-test",
    "date": "2026-12-08T03:30:00+00:00",
    "other_load": {"seen": True, "mean_cores": 0.4, "peak_cores": 1.3, "busiest": {"pytest": 80.0}},
}


def results_file(rows: list[Row], command: list[str] | None = None) -> dict[str, Any]:
    """A results file's content, as `python -m bench` writes it, read back from JSON."""
    content = results.document(
        rows, MACHINE, {"compute": {"status": 0}}, command or ["python", "-m", "bench"]
    )
    loaded: dict[str, Any] = json.loads(json.dumps(content))
    return loaded


def table_lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_rows_come_in_the_issues_order_and_a_missing_one_says_not_run() -> None:
    call = expected("million_deploy_call").row(
        "1,000,000 VMs, fake data plane (10,000 hosts x 100): the compute DEPLOY call",
        1.38,
        detail="at the client",
    )
    topology = expected("topology_vs_mininet").row(
        "topology: 1,000 emulated hosts up+down vs Mininet (1,024 hosts), same run",
        5.36,
        detail="1,000 vhosts up 11.9 s, down 1.0 s (78/s)",
        reference="Mininet (lxbr): 1,024 hosts up+down 70.8 s (14/s)",
    )
    extra = Row(
        "ovn_vs_floor", "OVN: 20 hosts x 50 ports vs the floor", 0.93, "x", 0.9, reference="floor 5.0 s"
    )
    # Given out of order, the extra row first.
    markdown = readme.markdown([("bench-results.json", results_file([extra, topology, call]))])

    lines = table_lines(markdown)
    assert len(lines) == len(EXPECTED) + 1
    assert lines[0] == (
        "| 1,000,000 VMs, fake data plane (10,000 hosts x 100): the compute DEPLOY call | 1.38 s; at the "
        "client | - | - | ≤ 2 s | yes |"
    )
    assert lines[6] == (
        "| topology: 1,000 emulated hosts up+down vs Mininet (1,024 hosts), same run | 1,000 vhosts up "
        "11.9 s, down 1.0 s (78/s) | Mininet (lxbr): 1,024 hosts up+down 70.8 s (14/s) | 5.36x | ≥ 5x | yes |"
    )
    assert lines[1] == "| 1M VMs: the compute phase (idle machine) | not run | - | - | ≤ 180 s | not run |"
    not_run = [line for line in lines if line.endswith("| not run |")]
    assert len(not_run) == len(EXPECTED) - 2
    assert lines[-1].startswith("| OVN: 20 hosts x 50 ports vs the floor |") and lines[-1].endswith(
        "| ≥ 0.9x | yes |"
    )
    assert (
        "Measured by `python -m bench` on 2026-12-08 03:30 UTC, 2 CPUs (Example CPU @ 2.20GHz), 23.5 GiB"
        in markdown
    )
    assert "other load seen: 0.4 cores on average, 1.3 at most (pytest)" in markdown
    assert "(`bench-results.json`)" in markdown


def test_the_verdict_says_what_the_run_was() -> None:
    item = expected("million_compute_phase")
    assert item.row("1M", 254.7).verdict() == "NO"
    assert item.row("1M", 170.0).verdict() == "yes"
    assert item.row("2,000 VMs", 3.0, full_size=False).verdict() == "not at the target's size"
    assert item.row("1M", 170.0, ok=False).verdict() == "run failed"
    assert item.row("1M", None, note="Mininet not installed").verdict() == "not measured"
    assert expected("agent_vs_ip_batch").row("agent", 1.9).met is False
    assert expected("agent_vs_ip_batch").row("agent", 2.1).met is True


def test_a_later_file_wins_and_a_column_says_which_run() -> None:
    first = results_file(
        [
            expected("million_teardown").row("1M: teardown", 224.0),
            expected("agent_vs_ip_batch").row("agent", 2.7),
        ]
    )
    second = results_file(
        [expected("million_teardown").row("1M: teardown", 110.0)], ["python", "-m", "bench", "million"]
    )
    markdown = readme.markdown([("bench-results.json", first), ("bench-million.json", second)])

    assert "Run 1: `python -m bench` on 2026-12-08 03:30 UTC" in markdown
    assert "Run 2: `python -m bench million` on 2026-12-08 03:30 UTC" in markdown
    lines = table_lines(markdown)
    assert (
        next(line for line in lines if "teardown" in line)
        == "| 2 | 1M: teardown | 110 s | - | - | ≤ 120 s | yes |"
    )
    assert next(line for line in lines if "agent" in line) == "| 1 | agent | 2.70x | - | - | ≥ 2x | yes |"
    assert next(line for line in lines if "GetResults" in line).startswith(
        "| - | 1M VMs: GetResults | not run |"
    )


def test_no_results_says_how_to_make_them() -> None:
    markdown = readme.markdown([])
    assert "No results file given" in markdown and "`make bench`, then `python -m bench readme`" in markdown
    assert len(table_lines(markdown)) == len(EXPECTED)


def test_only_what_stands_between_the_markers_is_replaced(tmp_path: Path) -> None:
    readme_file = tmp_path / "README.md"
    readme_file.write_text(f"# Title\n\nbefore\n{readme.BEGIN}\nold table\n{readme.END}\nafter\n")
    results_json = tmp_path / "bench-results.json"
    results.write(results_json, results_file([expected("agent_vs_ip_batch").row("agent: 1,000 VMs", 2.68)]))

    assert readme.main([str(results_json), "--readme", str(readme_file)]) == 0

    text = readme_file.read_text()
    assert text.startswith(f"# Title\n\nbefore\n{readme.BEGIN}\n<!-- Generated by `python -m bench readme`")
    assert text.endswith(f"|\n{readme.END}\nafter\n")
    assert "old table" not in text and "| agent: 1,000 VMs | 2.68x | - | - | ≥ 2x | yes |" in text


def test_a_readme_without_markers_is_refused() -> None:
    with pytest.raises(readme.MarkersMissing):
        readme.splice("# no markers here\n", "| table |")
