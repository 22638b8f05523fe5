"""teste2e's HTML report: one self-contained page (plotly.js embedded once), a latency distribution per
operation, series at a resolution that suits the run, fault windows shaded, everything escaped; and a
headless browser with no network draws every figure."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from merak import protojson
from merak_tools import report_html
from services.compute import results
from services.compute.results import CallSample

PLOTLY_JS = "* plotly.js v"  # the banner of the embedded bundle


def short_run() -> dict[str, Any]:
    """A 5 x 10 run of under three seconds, as GetResults gives it (through protojson, as teste2e)."""
    calls, ready = [], []
    for host in range(5):
        at = 0.4 + host * 0.45
        calls += [CallSample("native", "allocate_ports", "OK", 0.002 + 0.001 * i, at) for i in range(10)]
        calls.append(CallSample("native", "port_up", "error" if host == 3 else "OK", 0.05, at + 0.2))
        ready += [at + 0.3] * 10
    built = results.build(
        "cc-1", plugin="native", operation="CREATE", vms=50, requested_rps=0, calls=calls, ready=ready
    )
    built.faults.add(
        name="loss", description="link vhost-1: loss 10%", start_second=0.5, end_second=1.5, ended=True
    )
    built.faults.add(name="crash", description="host vhost-0: crashed", start_second=1.0)  # still on
    return protojson.to_dict(built)


def report(**results: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "phases": {"deploy compute": 2.5},
        "test": {"passed": 2450, "pairs_tried": 2450, "rtt_p50_ms": 0.08, "rtt_p90_ms": 0.1,
                 "rtt_p99_ms": 0.4, "rtt_max_ms": 1.3},
        "errors": [],
        "results": results or short_run(),
    }  # fmt: skip


def test_the_page_embeds_plotly_once_and_draws_a_distribution_per_operation() -> None:
    page = report_html.render(report())
    assert page.startswith("<!DOCTYPE html>") and page.count(PLOTLY_JS) == 1
    # Over time; allocate_ports, port_up; time to VM ready; the ping RTTs.
    titles = [figure.layout.title.text or "" for _, figure in report_html.figures(report())]
    assert len(titles) == 5 and page.count("Plotly.newPlot(") == 5
    assert [t for t in titles if "latency of" in t] == [
        "native allocate_ports: latency of 50 calls",
        "native port_up: latency of 5 calls",
    ]
    assert "Time to VM ready: 50 VMs" in titles and any("Round-trip time" in t for t in titles)
    # The tables stay HTML.
    assert "<td>allocate_ports</td>" in page and "2450 of 2450" in page and "50 of 50" in page
    # Self-contained: no script, style sheet or image is fetched.
    assert not re.search(r"<(script|img|iframe)[^>]* src=|<link", page)


def test_a_distribution_is_the_histogram_with_its_cdf() -> None:
    op = short_run()["operations"][0]
    assert op["operation"] == "allocate_ports" and sum(b["count"] for b in op["histogram"]) == 50
    figure = report_html.distribution_figure("allocate_ports", op["histogram"], op["latency"])
    bars, cdf = figure.data
    assert figure.layout.xaxis.type == "log" and max(bars.y) >= 1 and bars.fill == "tozeroy"
    assert cdf.y[0] == 0 and cdf.y[-1] == 100 and list(cdf.y) == sorted(cdf.y)
    assert {shape.line.dash for shape in figure.layout.shapes} == {"dot", "dash"}  # p50, p99
    # Results without a histogram (from before there were any) show their percentiles.
    old = report_html.distribution_figure("old", [], {"p50_ms": 1, "p90_ms": 2, "p99_ms": 3, "max_ms": 4})
    assert list(old.data[0].y) == [1, 2, 3, 4]


def test_a_short_run_shows_several_points_and_every_time_plot_shades_the_faults() -> None:
    run = short_run()
    figure = report_html.timeline_figure(run)
    assert figure is not None
    faults, ready, latency, errors = figure.data  # a faults' lane, then one row per series
    assert run["interval_seconds"] == 0.1
    shown = [x for x, y in zip(ready.x, ready.y, strict=True) if y]
    assert len(shown) == 5 and any(x % 1 for x in shown)  # five batches, at fractional seconds
    assert len(latency.x) >= 5 and sum(errors.y) == 10  # one error in 0.1 s: 10 per second
    assert list(faults.y) == ["loss", "crash"]
    # Each window shaded on each of the four rows, labelled once.
    shades = [s for s in figure.layout.shapes if s.type == "rect"]
    assert len(shades) == 2 * 4 and {s.fillcolor for s in shades} == {report_html.FAULT_COLOUR}
    assert sorted(s.label.text for s in shades if s.label.text) == ["crash", "loss"]
    crash = [s for s in shades if s.x0 == 1.0]
    assert {s.x1 for s in crash} == {report_html.time_span(run)}  # still on: to the end of the plots
    page = report_html.render(report())
    plotted = re.search(
        r'Plotly\.newPlot\(\s*"plot-0",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"', page, re.S
    )
    assert plotted is not None
    layout = json.loads(plotted.group(2))
    assert sum(1 for s in layout["shapes"] if s["fillcolor"] == report_html.FAULT_COLOUR) == 8
    assert "<td>loss</td>" in page and "still on" in page


def test_empty_and_partial_results_render() -> None:
    failed = report_html.render({"ok": False, "errors": ["compute: <b>boom</b>"], "results": {}})
    assert "&lt;b&gt;boom&lt;/b&gt;" in failed and "<b>boom" not in failed
    assert PLOTLY_JS not in failed and "nothing to plot" in failed and "FAILED" in failed
    # Faults but no calls yet; a series with a single point.
    partial = report_html.render(
        {"results": {"faults": [{"name": "x", "start_second": 1.0}], "ready_per_second": [{"value": 50}]}}
    )
    assert partial.count(PLOTLY_JS) == 1 and partial.count("Plotly.newPlot(") == 1
    assert "no control-plane calls" in partial
    assert report_html.render({}).count("<table>") == 2  # the summary, the phases


def test_text_from_the_results_is_escaped_in_the_figures_too() -> None:
    run = short_run()
    run["faults"][0]["name"] = "<b>x</b>"
    run["operations"][0]["operation"] = "<img src=x>"
    page = report_html.render(report(**run))
    assert "<b>x" not in page and "<img src=x>" not in page
    figure = report_html.timeline_figure(run)
    assert figure is not None and "&lt;b&gt;x&lt;/b&gt;" in figure.data[0].y


def test_a_browser_without_network_draws_every_figure(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (`make apt` installs it)")
    page = tmp_path / "report.html"
    page.write_text(report_html.render(report()))
    net_log = tmp_path / "net-log.json"
    process = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'profile'}",
         f"--log-net-log={net_log}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    dom = out.decode()
    # plotly marks each div it plotted, and draws each into its SVG layers.
    plotted = re.findall(r'<div id="(plot-\d+)" class="[^"]*\bjs-plotly-plot\b', dom)
    assert plotted == [f"plot-{i}" for i in range(5)]
    assert dom.count('class="main-svg"') >= 2 * 5
    for div in re.split(r'<div id="plot-\d+"', dom)[1:]:
        assert 'class="main-svg"' in div and 'class="trace ' in div  # its traces drawn
    # The timeline's fault windows are drawn: 2 windows on 4 rows.
    timeline = re.split(r'<div id="plot-\d+"', dom)[1]
    assert len(re.findall(r"<path[^>]*opacity: 0\.12;[^>]*fill: rgb\(214, 39, 40\)", timeline)) == 8
    log = json.loads(net_log.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    # The page asked for nothing (the browser's own calls home, which no page can avoid, are "not an
    # origin"; they fail here, as in a lab).
    asked = [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start_job and e.get("params", {}).get("initiator", "not an origin") != "not an origin"
    ]
    assert asked == []


def test_the_control_planes_processes_are_drawn_per_group_with_fault_windows() -> None:
    results = {
        "processes": [
            {
                "group": "northd",
                "samples": [{"at": 0.5, "cpu_cores": 0.2, "rss_mib": 9}, {"at": 1.5, "rss_mib": 9}],
            },
            {
                "group": "ovn-controller",
                "samples": [{"at": 0.5, "cpu_cores": 1.1, "rss_mib": 70, "processes": 5}],
            },
            {"group": "sb", "samples": []},
        ],
        "faults": [
            {
                "name": "f",
                "description": "process ovn-northd: frozen",
                "start_second": 1,
                "end_second": 2,
                "ended": True,
            }
        ],
    }
    figure = report_html.processes_figure(results)
    assert figure is not None
    assert sorted({t.name for t in figure.data}) == ["northd", "ovn-controller"]  # an empty group is left out
    assert len(figure.data) == 4  # CPU and memory of each
    assert len(figure.layout.shapes) == 2  # the window on both rows
    assert report_html.processes_figure({}) is None
    chassis = [{"at": 0.2, "registered": 1, "chassis": 3}, {"at": 1.2, "chassis": 3}]
    with_chassis = {**results, "chassis": chassis}
    figure = report_html.processes_figure(with_chassis)
    assert figure is not None
    assert len(figure.data) == 6  # and the chassis running and listed in SB
    assert [t.y for t in figure.data[4:]] == [(3, 3), (1, 0)]
    assert len(figure.layout.shapes) == 3  # the window on the third row too
    assert "Control plane processes" in report_html.render({"ok": True, "results": results})
