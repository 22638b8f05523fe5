"""What the benchmarks give back: one row per measured figure of issue #31's table (and OVN's aim), the
summary table printed at the end of `python -m bench`, and the JSON file it writes.

A row is a figure against its target: a time or a memory size bounded from above, or a ratio against
a reference measured in the same run (then `reference` says what the reference did). A row measured below
the size (or rate) its target is set for says so instead of met or not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# The word after a value of each unit.
_UNIT_WORDS: dict[str, str] = {
    "s": " s",
    "ms": " ms",
    "GiB": " GiB",
    "KiB/VM": " KiB per VM",
    "x": "x",
    "/s": "/s",
}


def format_value(value: float, unit: str) -> str:
    """A measured value with its unit, as the tables write it: three figures or so, ms as a difference."""
    if unit == "ms":
        number = f"{value:+,.1f}"
    elif unit in ("KiB/VM", "/s") or abs(value) >= 100:
        number = f"{value:,.0f}"
    else:
        number = f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    return number + _UNIT_WORDS.get(unit, f" {unit}")


def format_target(target: float, unit: str, at_most: bool) -> str:
    """A target as the tables write it, e.g. "≤ 2 s" or "≥ 5x"."""
    return ("≤ " if at_most else "≥ ") + f"{target:,g}" + _UNIT_WORDS.get(unit, f" {unit}")


@dataclass(frozen=True, slots=True)
class Row:
    """One measured figure: its value, its target, and what it was measured against."""

    key: str
    what: str  # the row's name, with the size it was measured at
    value: float | None  # what the target applies to; None: not measured this run (`note` says why)
    unit: str  # a key of _UNIT_WORDS
    target: float | None = None  # None: no target, the figure is for information
    at_most: bool = False  # the target bounds the value from above (times, memory), else from below
    detail: str = ""  # the measurement in words (with a reference: ours, which the ratio compares)
    reference: str = ""  # the reference run in the same invocation, in words; the value is then a ratio
    full_size: bool = True  # measured at the size the target is set for
    ok: bool = True  # the run behind it passed (VMs made, pings, nothing left after the teardown)
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is reached; None without a verdict (no target, no value, not at its size)."""
        if self.target is None or self.value is None or not self.full_size:
            return None
        reached = self.value <= self.target if self.at_most else self.value >= self.target
        return reached and self.ok

    def verdict(self) -> str:
        """The table's last column."""
        if not self.ok:
            return "run failed"
        if self.value is None:
            return "not measured"
        if self.target is None:
            return "-"
        if not self.full_size:
            return "not at the target's size"
        return "yes" if self.met else "NO"

    def measured(self) -> str:
        """The measured column: the value (or ours, for a ratio), then the detail and the note."""
        if self.reference:
            text = self.detail
        else:
            text = "-" if self.value is None else format_value(self.value, self.unit)
            if self.detail:
                text += f"; {self.detail}"
        return f"{text} ({self.note})" if self.note else text

    def ratio(self) -> str:
        """The ratio column: the value when it compares ours with a reference."""
        if not self.reference or self.value is None:
            return "-"
        return format_value(self.value, self.unit)

    def target_text(self) -> str:
        """The target column."""
        return "-" if self.target is None else format_target(self.target, self.unit, self.at_most)

    def cells(self) -> list[str]:
        """The row as the tables show it: what, measured, reference, ratio, target, met."""
        return [
            self.what,
            self.measured(),
            self.reference or "-",
            self.ratio(),
            self.target_text(),
            self.verdict(),
        ]


HEADERS = ["row", "measured", "reference (same run)", "ratio", "target", "met"]


@dataclass(frozen=True, slots=True)
class Expected:
    """A row of issue #31's table: its name at the size the target is set for, and the target."""

    key: str
    label: str
    unit: str
    target: float
    at_most: bool

    def row(
        self,
        what: str,
        value: float | None,
        *,
        detail: str = "",
        reference: str = "",
        full_size: bool = True,
        ok: bool = True,
        note: str = "",
    ) -> Row:
        """This row as measured: `what` names the size it ran at."""
        return Row(self.key, what, value, self.unit, self.target, self.at_most, detail, reference, full_size,
                   ok, note)  # fmt: skip

    def not_run(self) -> list[str]:
        """Its cells when no run measured it."""
        return [
            self.label,
            "not run",
            "-",
            "-",
            format_target(self.target, self.unit, self.at_most),
            "not run",
        ]


# Issue #31's table, in its order. The README's table lists these first ("not run" when a row is not in
# the results), then any other row the results hold.
EXPECTED: tuple[Expected, ...] = (
    Expected("million_deploy_call", "1M VMs, fake data plane (10,000 hosts x 100): the compute DEPLOY call",
             "s", 2.0, at_most=True),
    Expected("million_compute_phase", "1M VMs: the compute phase (idle machine)", "s", 180.0, at_most=True),
    Expected("million_get_results", "1M VMs: GetResults", "s", 1.0, at_most=True),
    Expected("million_peak_memory", "1M VMs: peak memory of the stack's processes", "GiB", 2.0, at_most=True),
    Expected("million_teardown", "1M VMs: teardown, nothing left", "s", 120.0, at_most=True),
    Expected("real_vm_memory", "real VMs, 200 hosts x 100: the machine's memory per VM", "KiB/VM", 450.0,
             at_most=True),
    Expected("topology_vs_mininet", "topology: 1,000 emulated hosts up+down vs Mininet, same run", "x", 5.0,
             at_most=False),
    Expected("agent_vs_ip_batch", "agent: 1,000 VMs vs ip -batch, same run", "x", 2.0, at_most=False),
    Expected("real_vs_ip_batch", "end to end real, 100 hosts x 100 VMs incl. overlay vs ip/bridge -batch, "
             "same run", "x", 2.0, at_most=False),
    Expected("alcor_latency_added", "Alcor (stand-in, loopback): latency the emulator adds, p50, at 1,300 "
             "requests/s", "ms", 2.0, at_most=True),
    Expected("alcor_sustained_rps", "Alcor (stand-in, loopback): port-manager requests/s sustained", "/s",
             1300.0, at_most=False),
)  # fmt: skip


def expected(key: str) -> Expected:
    """The row of issue #31's table named `key`."""
    return next(e for e in EXPECTED if e.key == key)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one benchmark gives back: its exit status and the rows it measured."""

    status: int
    rows: list[Row] = field(default_factory=list)


def text_table(rows: Sequence[Row]) -> list[str]:
    """The rows as an aligned plain-text table (for a terminal or a log)."""
    table = [HEADERS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in table]  # fmt: skip
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def ordered(rows: Iterable[Row]) -> list[Row]:
    """Rows in issue #31's order, the others after them in the order they came."""
    rank = {e.key: i for i, e in enumerate(EXPECTED)}
    return sorted(rows, key=lambda row: rank.get(row.key, len(rank)))


def document(
    rows: Sequence[Row], machine: dict[str, Any], benchmarks: dict[str, Any], command: list[str]
) -> dict[str, Any]:
    """The JSON file's content: the machine, what ran, and the rows with their verdicts."""
    return {
        "machine": machine,
        "command": command,
        "benchmarks": benchmarks,
        "rows": [asdict(row) | {"met": row.met} for row in ordered(rows)],
    }


def write(path: Path, content: dict[str, Any]) -> None:
    """Write the results file."""
    path.write_text(json.dumps(content, indent=2) + "\n")


def read_rows(content: dict[str, Any]) -> list[Row]:
    """The rows of a results file's content."""
    names = {f.name for f in fields(Row)}
    return [Row(**{k: v for k, v in raw.items() if k in names}) for raw in content.get("rows", [])]
