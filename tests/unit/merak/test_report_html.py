"""teste2e's HTML report: one self-contained page, plots as inline SVG, everything escaped."""

from __future__ import annotations

from merak_tools import report_html


def test_the_page_has_the_results_table_and_three_plots() -> None:
    report = {
        "ok": True,
        "phases": {"deploy compute": 2.5},
        "test": {"passed": 2450, "pairs_tried": 2450},
        "errors": [],
        "results": {
            "vms": 50, "vms_ready": 50, "achieved_vms_per_second": 20.0,
            "operations": [{"plugin": "alcor", "operation": "create_port", "requests": 50, "rate": 25.0,
                            "latency": {"p50_ms": 1.5, "p99_ms": 3.0}, "codes": {"201": 50}}],
            "latency_p50_ms": [{"second": 0, "value": 1.5}, {"second": 1, "value": 2.0}],
            "ready_per_second": [{"second": 0, "value": 25}, {"second": 1, "value": 25}],
            "errors_per_second": [],
        },
    }  # fmt: skip
    page = report_html.render(report)
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 2  # no errors: no third line
    assert "create_port" in page and "2450 of 2450" in page and "50 of 50" in page
    # Self-contained: nothing to fetch (the SVG namespace is a name, not a download).
    assert not any(marker in page for marker in ("<script", "<link", " src=", " href="))


def test_a_single_point_shows() -> None:
    # A short run fits in one interval: one point, drawn as a dot (a line of one point is invisible).
    chart = report_html.line_chart("VMs ready per second", "VMs/s", [{"second": 0, "value": 50}])
    assert chart.count("<circle") == 1 and "50 VMs/s" in chart


def test_text_is_escaped() -> None:
    page = report_html.render({"ok": False, "errors": ["<b>boom</b>"], "results": {}})
    assert "&lt;b&gt;boom&lt;/b&gt;" in page and "<b>boom" not in page
