"""`merak doctor`: can this machine run a lab of a given size."""

from __future__ import annotations

import json
from dataclasses import asdict

from rich.box import SIMPLE_HEAD
from rich.table import Table

from merak.host import HostTuner
from merak_tools.cli.output import console, say, wide_console
from merak_tools.doctor import Plan, failures, run_checks

STATUS_STYLE = {"ok": "green", "raise": "cyan", "info": "dim", "warn": "yellow", "fail": "red"}


def cmd_doctor(plan: Plan, as_json: bool = False, fix: bool = False) -> int:
    """Check this machine for a lab of `plan`'s size; exit 1 only when the product cannot work.

    With `fix`, first raise what is too low for that lab (as `merak up` does): the way to prepare the
    node of a container or pod, whose own network namespace does not show the neighbour thresholds.
    """
    if fix:
        with HostTuner() as tuner:
            sizing = tuner.ensure(plan.namespaces, reason="merak doctor --fix")
        for change in sizing.changes:
            say(f"raised {change}")
        for short in sizing.shortfalls:
            say(f"cannot raise {short}")
    checks = run_checks(plan)
    if as_json:
        print(json.dumps({"plan": asdict(plan), "checks": [c.as_dict() for c in checks]}, indent=2))
        return 1 if failures(checks) else 0
    table = Table(
        title=f"merak doctor: this machine, for a lab of {plan}", title_justify="left", box=SIMPLE_HEAD
    )
    for column in ("area", "check", "status", "current", "needed"):
        table.add_column(column, no_wrap=True)
    table.add_column("what it means", overflow="fold")
    for check in checks:
        style = STATUS_STYLE[check.status]
        table.add_row(
            check.area, check.name, f"[{style}]{check.status}[/{style}]", check.current, check.needed,
            check.meaning,
        )  # fmt: skip
    wide = wide_console()
    wide.print(table)
    counts = {status: sum(c.status == status for c in checks) for status in STATUS_STYLE}
    wide.print(", ".join(f"{n} {status}" for status, n in counts.items() if n))
    wide.print(
        "raise: too low for this lab; `merak up` and every lab that needs more raise it (root; never lower)\n"
        "info: missing, nothing uses it; warn: missing, a feature is lost; fail: the product cannot work"
    )
    failed = failures(checks)
    if failed:
        console.print(f"[red]unusable:[/red] {', '.join(c.name for c in failed)}")
        return 1
    return 0
