"""teste2e's report as one self-contained HTML page: the run, the control plane's results, SVG plots."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

WIDTH, HEIGHT, PAD = 640, 220, 40


def _points(series: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    return [(float(p.get("second", 0.0)), float(p.get("value", 0.0))) for p in series]


def _windows(faults: Sequence[dict[str, Any]]) -> list[tuple[float, float | None, str]]:
    """(start, end or None while it lasts, label) of each fault window."""
    return [
        (
            float(f.get("start_second", 0.0)),
            float(f.get("end_second", 0.0)) if f.get("ended") else None,
            f"{f.get('name', '')}: {f.get('description', '')}",
        )
        for f in faults
    ]


def time_span(results: dict[str, Any]) -> float:
    """The seconds every plot of the results spans (its series and its fault windows): one x scale."""
    ends = [
        float(p.get("second", 0.0))
        for name in ("latency_p50_ms", "ready_per_second", "errors_per_second")
        for p in results.get(name, [])
    ]
    ends += [end or start for start, end, _ in _windows(results.get("faults", []))]
    return max(ends, default=0.0) or 1.0


def fault_timeline(faults: Sequence[dict[str, Any]], max_x: float) -> str:
    """One lane per fault, a bar per occurrence, on the plots' time scale."""
    names = list(dict.fromkeys(str(f.get("name", "")) for f in faults))
    lane = 22
    height = PAD + lane * len(names) + 10
    span_x = WIDTH - 2 * PAD
    bars = []
    for row, name in enumerate(names):
        y = 10 + row * lane
        bars.append(
            f'<text x="{PAD - 4}" y="{y + 14}" font-size="11" text-anchor="end">{html.escape(name)}</text>'
        )
        for start, end, label in _windows([f for f in faults if str(f.get("name", "")) == name]):
            stop = end if end is not None else max_x
            bars.append(
                f'<rect class="fault-bar" x="{PAD + start / max_x * span_x:.1f}" y="{y}" '
                f'width="{max(2.0, (stop - start) / max_x * span_x):.1f}" height="{lane - 6}" '
                f'fill="#d62728" fill-opacity="0.6"><title>{html.escape(label)}</title></rect>'
            )
    axis = height - PAD + 10
    return (
        "<figure><figcaption>Faults over time</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img">'
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>' + "".join(bars) +
        f'<line x1="{PAD}" y1="{axis}" x2="{WIDTH - PAD}" y2="{axis}" stroke="#444"/>'
        f'<text x="{PAD}" y="{axis + 16}" font-size="12">0</text>'
        f'<text x="{WIDTH - PAD}" y="{axis + 16}" font-size="12" text-anchor="end">{max_x:.4g} s</text>'
        "</svg></figure>"
    )  # fmt: skip


def line_chart(
    title: str,
    unit: str,
    series: Sequence[dict[str, Any]],
    faults: Sequence[dict[str, Any]] = (),
    span: float | None = None,
) -> str:
    """An SVG line chart of (second, value) points, with its axes labelled; each fault's window shaded.
    `span`: the seconds the x axis covers (default: the last point's or window's)."""
    points = _points(series)
    head = f"<figure><figcaption>{html.escape(title)}</figcaption>"
    if not points:
        return head + "<p>no data</p></figure>"
    windows = _windows(faults)
    max_x = span or max([x for x, _ in points] + [end or start for start, end, _ in windows]) or 1.0
    max_y = max(y for _, y in points) or 1.0

    span_x, span_y = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    shaded = "".join(
        f'<rect class="fault" x="{PAD + start / max_x * span_x:.1f}" y="{PAD}" '
        f'width="{max(2.0, ((end if end is not None else max_x) - start) / max_x * span_x):.1f}" '
        f'height="{span_y}" fill="#d62728" fill-opacity="0.08"><title>{html.escape(label)}</title></rect>'
        for start, end, label in windows
    )
    placed = [(PAD + x / max_x * span_x, HEIGHT - PAD - y / max_y * span_y) for x, y in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in placed)
    # A dot per point too: a run that fits in one interval is one point, which a line does not show.
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#1f77b4"/>' for x, y in placed)
    return (
        head + f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>{shaded}'
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#444"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#444"/>'
        f'<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{path}"/>{dots}'
        f'<text x="{PAD}" y="{PAD - 8}" font-size="12">{max_y:.4g} {html.escape(unit)}</text>'
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" font-size="12" '
        f'text-anchor="end">{max_x:.4g} s</text>'
        f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" font-size="12">0</text>'
        "</svg></figure>"
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def render(report: dict[str, Any]) -> str:
    """The whole page."""
    results: dict[str, Any] = report.get("results") or {}
    test: dict[str, Any] = report.get("test") or {}
    phases = [(name, f"{seconds:.1f}") for name, seconds in (report.get("phases") or {}).items()]
    operations = [
        (
            op.get("plugin", ""), op.get("operation", ""), op.get("requests", 0), f"{op.get('rate', 0):.1f}",
            op.get("latency", {}).get("p50_ms", 0), op.get("latency", {}).get("p90_ms", 0),
            op.get("latency", {}).get("p99_ms", 0), op.get("latency", {}).get("max_ms", 0),
            op.get("errors", 0), json.dumps(op.get("codes", {}), sort_keys=True),
        )
        for op in results.get("operations", [])
    ]  # fmt: skip
    faults = results.get("faults", [])
    fault_rows = [
        (
            f.get("name", ""), f.get("occurrence", 0), f.get("description", ""),
            f"{f.get('start_second', 0.0):.1f}",
            f"{f.get('end_second', 0.0):.1f}" if f.get("ended") else "still on",
            f.get("error", "") or "none",
        )
        for f in faults
    ]  # fmt: skip
    span = time_span(results)
    ready = results.get("time_to_ready", {})
    status = "passed" if report.get("ok") else "FAILED"
    summary = [
        ("result", status),
        ("VMs ready", f"{results.get('vms_ready', report.get('vms_done', 0))} of {results.get('vms', 0)}"),
        ("achieved VMs/s", results.get("achieved_vms_per_second", 0)),
        ("requested rate (VMs/s, 0 = unpaced)", results.get("requested_rps", 0)),
        ("time to VM ready p50 / p99 / max (ms)",
         f"{ready.get('p50_ms', 0)} / {ready.get('p99_ms', 0)} / {ready.get('max_ms', 0)}"),
        ("ping pairs passed", f"{test.get('passed', 0)} of {test.get('pairs_tried', 0)}"),
        ("churn: VMs replaced, VMs alive min / max",
         f"{results.get('churned', 0)}, {results.get('population_min', 0)} / "
         f"{results.get('population_max', 0)}"),
        ("errors", "; ".join(report.get("errors") or []) or "none"),
    ]  # fmt: skip
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}figure{margin:1em 0}"
        "figcaption{font-weight:bold}"
    )
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>merak teste2e report</title><style>{style}</style></head><body>"
        f"<h1>merak teste2e: {html.escape(status)}</h1>"
        + _table([], summary)
        + "<h2>Control plane under test</h2>"
        + _table(
            [
                "plugin",
                "operation",
                "requests",
                "req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "errors",
                "codes",
            ],
            operations,
        )
        + (fault_timeline(faults, span) if faults else "")
        + line_chart(
            "Control-plane latency over time (p50 per interval)",
            "ms",
            results.get("latency_p50_ms", []),
            faults,
            span,
        )
        + line_chart("VMs ready per second", "VMs/s", results.get("ready_per_second", []), faults, span)
        + line_chart(
            "Control-plane errors per second",
            "errors/s",
            results.get("errors_per_second", []),
            faults,
            span,
        )
        + (
            line_chart("VMs alive (churn)", "VMs", results.get("population", []), faults, span)
            if results.get("population")
            else ""
        )
        + (
            "<h2>Faults (shaded on the plots)</h2>"
            + _table(["fault", "occurrence", "what", "from s", "to s", "error"], fault_rows)
            if fault_rows
            else ""
        )
        + "<h2>Phases</h2>"
        + _table(["phase", "seconds"], phases)
        + "</body></html>"
    )
