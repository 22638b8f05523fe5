"""`python -m bench`: one table of every benchmark's rows, one results file; a benchmark that crashes or
refuses its flags fails alone, and a run that measured nothing leaves the last results file as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench.results import Outcome, expected


def fake_benchmarks(monkeypatch: pytest.MonkeyPatch, seen: list[tuple[str, list[str]]]) -> None:
    def topology(argv: list[str]) -> Outcome:
        seen.append(("topology", argv))
        return Outcome(0, [expected("topology_vs_mininet").row("topology: 8 hosts", 0.8, full_size=False)])

    def agent(argv: list[str]) -> Outcome:
        seen.append(("agent", argv))
        raise RuntimeError("agent did not start")

    def compute(argv: list[str]) -> Outcome:
        seen.append(("compute", argv))
        raise SystemExit(2)  # argparse refusing a flag

    def alcor(argv: list[str]) -> Outcome:
        seen.append(("alcor", argv))
        return Outcome(1, [expected("alcor_sustained_rps").row("alcor: 5 x 10", 1500.0, ok=False)])

    monkeypatch.setattr(
        bench_main, "BENCHMARKS", {"topology": topology, "agent": agent, "compute": compute, "alcor": alcor}
    )


def test_every_benchmark_runs_and_one_file_holds_their_rows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[str, list[str]]] = []
    fake_benchmarks(monkeypatch, seen)
    path = tmp_path / "results.json"

    status = bench_main.main(["topology", "agent", "compute", "alcor", "--results", str(path), "--vms", "3"])

    assert status == 3  # 1 | 2 | 1
    assert [name for name, _ in seen] == ["topology", "agent", "compute", "alcor"]
    assert all(argv == ["--vms", "3"] for _, argv in seen)
    content = json.loads(path.read_text())
    assert content["command"] == [
        "python", "-m", "bench", "topology", "agent", "compute", "alcor", "--results", str(path), "--vms", "3"
    ]  # fmt: skip
    assert content["machine"]["cpus"] >= 1 and "seen" in content["machine"]["other_load"]
    assert content["benchmarks"]["agent"]["error"] == "RuntimeError: agent did not start"
    assert content["benchmarks"]["compute"] == {"status": 2, "seconds": 0, "error": "refused its arguments"}
    assert [(row["key"], row["met"]) for row in content["rows"]] == [
        ("topology_vs_mininet", None),
        ("alcor_sustained_rps", False),
    ]
    out = capsys.readouterr().out
    assert "topology: 8 hosts" in out and "not at the target's size" in out and "run failed" in out
    assert f"results written to {path}" in out


def test_smoke_flags_come_before_the_ones_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[tuple[str, list[str]]] = []
    fake_benchmarks(monkeypatch, seen)
    monkeypatch.chdir(tmp_path)

    bench_main.main(["topology", "--smoke", "--vhosts", "4"])

    assert seen == [("topology", [*bench_main.SMOKE["topology"], "--vhosts", "4"])]
    assert (tmp_path / "bench-smoke.json").exists()  # never over a real run's file


def test_a_run_that_measured_nothing_leaves_the_file_as_it_was(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_benchmarks(monkeypatch, [])
    path = tmp_path / "results.json"
    path.write_text("{}")
    assert bench_main.main(["agent", "--results", str(path)]) == 1
    assert path.read_text() == "{}"


def test_the_million_alone_has_its_own_file() -> None:
    assert bench_main.results_path(["million"], smoke=False) == Path("bench-million.json")
    assert bench_main.results_path(["compute", "million"], smoke=False) == Path("bench-results.json")
