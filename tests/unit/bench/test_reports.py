"""The compute benchmark keeps teste2e's reports where the user asks (the million's in the current
directory), and teste2e writes them the same way its command does."""

from __future__ import annotations

import json
from pathlib import Path

from bench import stack
from bench.compute_bench import Run, report_lines, report_path
from merak_tools import teste2e
from merak_tools.localstack import StackSettings


def test_report_paths() -> None:
    assert report_path(None, "fake") is None
    assert report_path(Path("."), "fake") == Path("bench-million-report.json")
    assert report_path(Path("out"), "real") == Path("out/bench-real-report.json")


def test_kept_report_goes_to_teste2e_with_its_html(tmp_path: Path) -> None:
    settings = StackSettings(state_dir=tmp_path / "state")
    kept = tmp_path / "bench-million-report.json"
    opts = teste2e.parse(stack.teste2e_argv(settings, "report-fake.json", kept))
    assert opts.report == kept
    assert opts.html == tmp_path / "bench-million-report.html"
    opts = teste2e.parse(stack.teste2e_argv(settings, "report-fake.json"))
    assert opts.report == settings.state_dir / "report-fake.json"
    assert opts.html is None


def test_reports_written_and_named(tmp_path: Path) -> None:
    kept = tmp_path / "bench-million-report.json"
    run = Run("fake", 2, 3, report=kept)
    assert report_lines(run) == []  # not written yet: nothing claimed
    opts = teste2e.parse(["--report", str(kept), "--html", str(kept.with_suffix(".html"))])
    teste2e.write_reports(teste2e.Report(options={"hosts": 2}), opts)
    assert json.loads(kept.read_text())["options"] == {"hosts": 2}
    assert "<html" in kept.with_suffix(".html").read_text().lower()
    assert report_lines(run) == [f"fake: teste2e's report {kept} and {kept.with_suffix('.html')}"]
