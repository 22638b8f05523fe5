"""teste2e's report as one self-contained HTML page: the run, the control plane's results as tables, and
plotly figures (latency distributions, series over time with the fault windows shaded, the ping RTTs).

plotly.js is embedded once, in the first figure, so the page opens where there is no network (labs
have none). Every text that comes from the results is escaped: the tables' as HTML, the figures' too,
since plotly reads a subset of HTML in its labels."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

FAULT_COLOUR = "#d62728"
FAILED_FAULT_COLOUR = "#7f7f7f"
ROW_HEIGHT = 200
# One colour per process group (plotly's default sequence).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
LANE_HEIGHT = 28
# Figures' options: no plotly logo, no link to plotly's online editor, sized with the page.
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _text(value: Any) -> str:
    """A value from the results as figure text: escaped, so plotly shows it as it is."""
    return html.escape(str(value), quote=False)


def _num(value: Any) -> float:
    """A number of the report document (0 when missing or not a number)."""
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


@dataclass(frozen=True, slots=True)
class Window:
    """One fault window on the time axis: end is None while the fault lasts."""

    name: str
    start: float
    end: float | None
    label: str
    failed: bool


def _windows(faults: Sequence[dict[str, Any]]) -> list[Window]:
    return [
        Window(
            name=str(f.get("name", "")),
            start=_num(f.get("start_second")),
            end=_num(f.get("end_second")) if f.get("ended") else None,
            label=f"{f.get('name', '')}: {f.get('description', '')}"
            + (f" (failed: {f.get('error')})" if f.get("error") else ""),
            failed=bool(f.get("error")),
        )
        for f in faults
    ]


SERIES = (
    ("ready_per_second", "VMs ready per second", "VMs/s", "bar"),
    ("latency_p50_ms", "Control-plane latency, p50 per interval", "ms", "line"),
    ("errors_per_second", "Control-plane errors per second", "errors/s", "bar"),
    ("population", "VMs alive (churn), the most per interval", "VMs", "line"),
)


def interval(results: dict[str, Any]) -> float:
    """The width of the series' intervals, in seconds (from the results, or their points)."""
    width = _num(results.get("interval_seconds"))
    if width > 0:
        return width
    for name, *_ in SERIES:
        points = results.get(name) or []
        if len(points) > 1:
            return _num(points[1].get("second")) - _num(points[0].get("second")) or 1.0
    return 1.0


def time_span(results: dict[str, Any]) -> float:
    """The seconds every time plot of the results spans (its series and its fault windows): one x scale."""
    width = interval(results)
    ends = [_num(p.get("second")) + width for name, *_ in SERIES for p in results.get(name) or []]
    ends += [w.end if w.end is not None else w.start for w in _windows(results.get("faults") or [])]
    return max(ends, default=0.0) or 1.0


def timeline_figure(results: dict[str, Any]) -> go.Figure | None:
    """The series over time, one row each on one time axis, under a lane per fault when there are
    faults; every fault window shaded on every row. None when there is nothing over time."""
    rows = [(name, title, unit, kind) for name, title, unit, kind in SERIES if results.get(name)]
    windows = _windows(results.get("faults") or [])
    if not rows and not windows:
        return None
    span, width = time_span(results), interval(results)
    lanes = list(dict.fromkeys(w.name for w in windows))
    titles = (["Faults"] if windows else []) + [_text(title) for _, title, _, _ in rows]
    heights = ([max(80, LANE_HEIGHT * len(lanes) + 40)] if windows else []) + [ROW_HEIGHT] * len(rows)
    figure = make_subplots(
        rows=len(titles),
        cols=1,
        shared_xaxes=True,
        subplot_titles=titles,
        row_heights=heights,
        vertical_spacing=min(0.08, 0.3 / len(titles)),
    )
    row = 1
    if windows:
        figure.add_trace(
            go.Bar(
                orientation="h",
                y=[_text(w.name) for w in windows],
                base=[w.start for w in windows],
                x=[max((w.end if w.end is not None else span) - w.start, span / 500) for w in windows],
                hovertext=[_text(w.label) + ("" if w.end is not None else " (still on)") for w in windows],
                hoverinfo="text",
                marker_color=[FAILED_FAULT_COLOUR if w.failed else FAULT_COLOUR for w in windows],
                name="faults",
                showlegend=False,
            ),
            row=1,
            col=1,
        )
        figure.update_yaxes(autorange="reversed", row=1, col=1)
        row = 2
    for name, title, unit, kind in rows:
        seconds = [_num(p.get("second")) for p in results[name]]
        values = [_num(p.get("value")) for p in results[name]]
        if kind == "bar":
            # A bar covers its interval: [second, second + interval).
            trace = go.Bar(x=seconds, y=values, width=width, offset=0, marker_color="#1f77b4")
        else:
            # A point at its interval's middle; markers too, so a run of one interval still shows.
            trace = go.Scatter(
                x=[s + width / 2 for s in seconds], y=values, mode="lines+markers", line_color="#1f77b4"
            )
        trace.update(name=_text(title), showlegend=False, hovertemplate=f"%{{x:.3g}} s: %{{y:.4g}} {unit}")
        figure.add_trace(trace, row=row, col=1)
        figure.update_yaxes(title_text=_text(unit), rangemode="tozero", row=row, col=1)
        row += 1
    # Labelled on one row only (the first of the series): overlapping windows' labels would cover
    # the plots, and the faults' lane names them already.
    labelled = 2 if windows and rows else 1
    for window in windows:
        end = window.end if window.end is not None else span
        colour = FAILED_FAULT_COLOUR if window.failed else FAULT_COLOUR
        for shaded in range(1, len(titles) + 1):
            figure.add_vrect(
                x0=window.start,
                x1=max(end, window.start + span / 500),
                row=shaded,
                col=1,
                fillcolor=colour,
                opacity=0.12,
                line_width=0,
                layer="below",
                name=_text(window.label),
                label={"text": _text(window.name), "textposition": "top left", "font": {"size": 10}}
                if shaded == labelled
                else None,
            )
    figure.update_xaxes(range=[0, span])
    figure.update_xaxes(title_text="seconds since the operation started", row=len(titles), col=1)
    figure.update_layout(
        height=sum(heights) + 60 * len(titles) + 40,
        bargap=0,
        margin={"l": 70, "r": 20, "t": 40, "b": 50},
        template="plotly_white",
    )
    return figure


def processes_figure(results: dict[str, Any]) -> go.Figure | None:
    """CPU (cores) and resident memory of the control plane's processes over the run (OVN: northd, NB,
    SB, the chassis), a line per group, and the chassis the southbound database lists against those the
    hosts run; fault windows shaded. None when the results carry none of them."""
    groups = [g for g in results.get("processes") or [] if g.get("samples")]
    chassis = results.get("chassis") or []
    if not groups and not chassis:
        return None
    titles = ["CPU, cores (summed over the group)", "Resident memory, MiB (summed over the group)"]
    if chassis:
        titles.append("OVN chassis: listed in the southbound database, of those the hosts run")
    rows = len(titles)
    figure = make_subplots(rows=rows, cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.1)
    for colour, group in zip(PALETTE * (len(groups) // len(PALETTE) + 1), groups, strict=False):
        name = _text(group.get("group", ""))
        samples = group["samples"]
        seconds = [_num(x.get("at")) for x in samples]
        for row, key, unit in ((1, "cpu_cores", "cores"), (2, "rss_mib", "MiB")):
            figure.add_trace(
                go.Scatter(
                    x=seconds,
                    y=[_num(x.get(key)) for x in samples],
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=row == 1,
                    line_color=colour,
                    hovertemplate=f"{name}: %{{y:.4g}} {unit} at %{{x:.3g}} s<extra></extra>",
                ),
                row=row,
                col=1,
            )
    if chassis:
        seconds = [_num(x.get("at")) for x in chassis]
        for key, name, colour, dash in (
            ("chassis", "chassis running", PALETTE[1], "dot"),
            ("registered", "chassis in SB", PALETTE[0], "solid"),
        ):
            figure.add_trace(
                go.Scatter(
                    x=seconds,
                    y=[_num(x.get(key)) for x in chassis],
                    mode="lines+markers",  # a short run has a single sample: a marker shows it
                    line_shape="hv",
                    line={"color": colour, "dash": dash},
                    name=name,
                    hovertemplate=f"{name}: %{{y:.0f}} at %{{x:.3g}} s<extra></extra>",
                ),
                row=3,
                col=1,
            )
    span = max(
        [time_span(results)]
        + [_num(x.get("at")) for g in groups for x in g["samples"]]
        + [_num(x.get("at")) for x in chassis]
    )
    for window in _windows(results.get("faults") or []):
        end = window.end if window.end is not None else span
        for row in range(1, rows + 1):
            figure.add_vrect(
                x0=window.start,
                x1=max(end, window.start + span / 500),
                row=row,
                col=1,
                fillcolor=FAILED_FAULT_COLOUR if window.failed else FAULT_COLOUR,
                opacity=0.12,
                line_width=0,
                layer="below",
                name=_text(window.label),
            )
    figure.update_yaxes(rangemode="tozero")
    figure.update_xaxes(title_text="seconds since the operation started", row=rows, col=1)
    figure.update_layout(
        height=rows * ROW_HEIGHT + 200, margin={"l": 70, "r": 20, "t": 40, "b": 50}, template="plotly_white"
    )
    return figure


def _buckets(raw: Sequence[dict[str, Any]]) -> list[tuple[float, float, float]]:
    """(lower, upper, count) of a histogram's buckets; a first bucket from 0 starts a tenth of a decade
    below its upper bound, so that it has a width on a log axis."""
    buckets = []
    for bucket in raw:
        upper = _num(bucket.get("upper_ms"))
        lower = _num(bucket.get("lower_ms")) or upper / 10**0.1
        buckets.append((lower, upper, _num(bucket.get("count"))))
    return sorted(buckets)


def _log_ticks(low: float, high: float) -> list[float]:
    """1-2-5 ticks from low to high: plotly's own on a short log axis read "2" for 20."""
    ticks = []
    exponent = math.floor(math.log10(low)) if low > 0 else -2
    while 10**exponent <= high * 10:
        ticks += [float(f"{m * 10.0**exponent:.6g}") for m in (1, 2, 5)]
        exponent += 1
    return [t for t in ticks if low <= t <= high] or [low, high]


def distribution_figure(
    title: str, histogram: Sequence[dict[str, Any]], latency: dict[str, Any], counted: str = "calls"
) -> go.Figure:
    """A latency histogram (log-spaced buckets on a log axis) with its CDF, and the summary's p50 and
    p99 marked. Without a histogram (results from before there were any): the summary's percentiles."""
    buckets = _buckets(histogram)
    if not buckets:
        return percentiles_figure(title, latency, *PERCENTILE_KEYS)
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    xs: list[float] = []
    ys: list[float] = []
    for lower, upper, count in buckets:  # each bucket's outline: a bar on a log axis
        xs += [lower, lower, upper, upper]
        ys += [0, count, count, 0]
    figure.add_trace(
        go.Scatter(
            x=xs, y=ys, mode="lines", fill="tozeroy", line={"color": "#1f77b4", "width": 1}, name=counted,
            hoverinfo="skip",
        ),
        secondary_y=False,
    )  # fmt: skip
    # The CDF rises across a bucket and stays flat across the empty ones between.
    total = sum(count for _, _, count in buckets) or 1.0
    seen = 0.0
    cdf_x: list[float] = []
    cdf_y: list[float] = []
    for lower, upper, count in buckets:
        cdf_x += [lower, upper]
        cdf_y += [100 * seen / total, 100 * (seen + count) / total]
        seen += count
    figure.add_trace(
        go.Scatter(
            x=cdf_x, y=cdf_y, mode="lines", name="cumulative %", line={"color": "#ff7f0e"},
            hovertemplate="≤ %{x:.4g} ms: %{y:.1f}%<extra></extra>",
        ),
        secondary_y=True,
    )  # fmt: skip
    for key, dash in (("p50_ms", "dot"), ("p99_ms", "dash")):
        value = _num(latency.get(key))
        if value > 0:
            figure.add_vline(
                x=value, line_dash=dash, line_color="#444", line_width=1,
                label={
                    "text": f"{key[:3]} {value:.4g} ms", "textposition": "end", "textangle": 0,
                    "yanchor": "bottom", "font": {"size": 10},
                },
            )  # fmt: skip
    ticks = _log_ticks(buckets[0][0], buckets[-1][1])
    figure.update_xaxes(
        type="log", title_text="ms (log scale)", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks]
    )
    most = max(count for _, _, count in buckets)
    figure.update_yaxes(
        title_text=counted, rangemode="tozero", dtick=1 if most <= 5 else None, secondary_y=False
    )
    figure.update_yaxes(
        title_text="cumulative %", range=[0, 102], tickvals=[0, 25, 50, 75, 90, 99], secondary_y=True,
        showgrid=False,
    )  # fmt: skip
    figure.update_layout(
        title={"text": _text(title)}, height=320, template="plotly_white",
        legend={"orientation": "h", "y": -0.3}, margin={"l": 70, "r": 60, "t": 50, "b": 40},
    )  # fmt: skip
    return figure


def percentiles_figure(title: str, values: dict[str, Any], *keys: str) -> go.Figure:
    """Percentiles (e.g. p50/p90/p99/max, in ms) as bars: for what the results give only as a summary
    (one the results do not carry, as p95 from before it was kept, is left out)."""
    keys = tuple(key for key in keys if key in values)
    names = [key.removeprefix("rtt_").removesuffix("_ms") for key in keys]
    figure = go.Figure(
        go.Bar(
            x=names,
            y=[_num(values.get(key)) for key in keys],
            text=[f"{_num(values.get(key)):.4g}" for key in keys],
            textposition="outside",
            marker_color="#1f77b4",
            hovertemplate="%{x}: %{y:.4g} ms<extra></extra>",
        )
    )
    figure.update_yaxes(title_text="ms", rangemode="tozero")
    figure.update_layout(
        title={"text": _text(title)}, height=300, template="plotly_white",
        margin={"l": 70, "r": 20, "t": 50, "b": 40},
    )  # fmt: skip
    return figure


def figures(report: dict[str, Any]) -> list[tuple[str, go.Figure]]:
    """The page's figures, in order, each with the heading it goes under."""
    results: dict[str, Any] = report.get("results") or {}
    test: dict[str, Any] = report.get("test") or {}
    found: list[tuple[str, go.Figure]] = []
    timeline = timeline_figure(results)
    if timeline is not None:
        found.append(("Over time (fault windows shaded)", timeline))
    processes = processes_figure(results)
    if processes is not None:
        found.append(("Control plane processes (CPU, memory and chassis over the run)", processes))
    for op in results.get("operations") or []:
        found.append(
            (
                "Latency distributions",
                distribution_figure(
                    f"{op.get('plugin', '')} {op.get('operation', '')}: latency of "
                    f"{int(_num(op.get('requests')))} calls",
                    op.get("histogram") or [],
                    op.get("latency") or {},
                ),
            )
        )
    ready = results.get("time_to_ready") or {}
    if _num(ready.get("count")):
        found.append(
            (
                "Latency distributions",
                distribution_figure(
                    f"Time to VM ready: {int(_num(ready.get('count')))} VMs",
                    results.get("time_to_ready_histogram") or [],
                    ready,
                    counted="VMs",
                ),
            )
        )
    if _num(test.get("rtt_max_ms")):
        found.append(
            (
                "Ping test",
                percentiles_figure(
                    f"Round-trip time of the {int(_num(test.get('passed')))} pairs that passed "
                    "(the test reports percentiles, not each pair)",
                    test,
                    "rtt_p50_ms",
                    "rtt_p90_ms",
                    "rtt_p99_ms",
                    "rtt_max_ms",
                ),
            )
        )
    return found


def embed(found: Sequence[tuple[str, go.Figure]]) -> str:
    """The figures as HTML under their headings; plotly.js goes in with the first one only."""
    parts: list[str] = []
    heading = ""
    for index, (under, figure) in enumerate(found):
        if under != heading:
            parts.append(f"<h2>{html.escape(under)}</h2>")
            heading = under
        parts.append(
            pio.to_html(
                figure,
                full_html=False,
                include_plotlyjs=index == 0,
                config=PLOT_CONFIG,
                div_id=f"plot-{index}",
            )
        )
    return "".join(parts)


OPERATION_HEADERS = (
    "plugin", "operation", "requests", "req/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "max ms", "errors",
    "codes",
)  # fmt: skip


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


PERCENTILE_KEYS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")


def render(report: dict[str, Any]) -> str:
    """The whole page."""
    results: dict[str, Any] = report.get("results") or {}
    test: dict[str, Any] = report.get("test") or {}
    phases = [(name, f"{_num(seconds):.1f}") for name, seconds in (report.get("phases") or {}).items()]
    operations = [
        (
            op.get("plugin", ""), op.get("operation", ""), op.get("requests", 0),
            f"{_num(op.get('rate')):.1f}",
            *((op.get("latency") or {}).get(key, 0) for key in PERCENTILE_KEYS),
            op.get("errors", 0), json.dumps(op.get("codes") or {}, sort_keys=True),
        )
        for op in results.get("operations") or []
    ]  # fmt: skip
    fault_rows = [
        (
            f.get("name", ""), f.get("occurrence", 0), f.get("description", ""),
            f"{_num(f.get('start_second')):.1f}",
            f"{_num(f.get('end_second')):.1f}" if f.get("ended") else "still on",
            f.get("error", "") or "none",
        )
        for f in results.get("faults") or []
    ]  # fmt: skip
    ready = results.get("time_to_ready") or {}
    status = "passed" if report.get("ok") else "FAILED"
    summary = [
        ("result", status),
        ("VMs ready", f"{results.get('vms_ready', report.get('vms_done', 0))} of {results.get('vms', 0)}"),
        ("achieved VMs/s", results.get("achieved_vms_per_second", 0)),
        ("requested rate (VMs/s, 0 = unpaced)", results.get("requested_rps", 0)),
        ("time to VM ready p50 / p99 / max (ms)",
         f"{ready.get('p50_ms', 0)} / {ready.get('p99_ms', 0)} / {ready.get('max_ms', 0)}"),
        ("ping pairs passed", f"{test.get('passed', 0)} of {test.get('pairs_tried', 0)}"),
        ("ping RTT p50 / p99 / max (ms)",
         f"{test.get('rtt_p50_ms', 0)} / {test.get('rtt_p99_ms', 0)} / {test.get('rtt_max_ms', 0)}"),
        ("churn: VMs replaced, VMs alive min / max",
         f"{results.get('churned', 0)}, {results.get('population_min', 0)} / "
         f"{results.get('population_max', 0)}"),
        ("series interval (s)", f"{interval(results):g}" if results else "none"),
        ("errors", "; ".join(str(e) for e in report.get("errors") or []) or "none"),
    ]  # fmt: skip
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
    )
    plots = embed(figures(report))
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>merak teste2e report</title><style>{style}</style></head><body>"
        f"<h1>merak teste2e: {html.escape(status)}</h1>"
        + _table([], summary)
        + "<h2>Control plane under test</h2>"
        + (
            _table(OPERATION_HEADERS, operations)
            if operations
            else "<p>no control-plane calls in the results</p>"
        )
        + (plots or "<p>nothing to plot</p>")
        + (
            "<h2>Faults (shaded on the time plots)</h2>"
            + _table(["fault", "occurrence", "what", "from s", "to s", "error"], fault_rows)
            if fault_rows
            else ""
        )
        + "<h2>Phases</h2>"
        + _table(["phase", "seconds"], phases)
        + "</body></html>"
    )
