"""What a teste2e run reports: its phases, results and errors, printed as a summary and written as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


class E2EError(Exception):
    """A phase failed; the message says which and why."""


@dataclass
class Report:
    """What happened, for the summary and the JSON report."""

    options: dict[str, Any]
    ids: dict[str, str] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    # Single calls inside the phases, timed at the client: each DEPLOY action's reply, GetResults.
    calls: dict[str, float] = field(default_factory=dict)
    vms: int = 0
    vms_done: int = 0
    test: dict[str, Any] = field(default_factory=dict)
    # The control plane's results (compute's GetResults: requests, latencies, rates, time to ready).
    results: dict[str, Any] = field(default_factory=dict)
    teardown: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # What the services left out of the configs, as Merak did (placeholders), each naming its field.
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Everything passed."""
        return not self.errors


def describe(exc: BaseException) -> str:
    """An error as a report line: a gRPC error by its code and details."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)


def print_summary(report: Report) -> None:
    """Phase durations, VMs/s, ping pairs."""
    table = Table(title="teste2e summary")
    table.add_column("phase")
    table.add_column("seconds", justify="right")
    for phase, seconds in report.phases.items():
        table.add_row(phase, f"{seconds:.1f}")
    console.print(table)
    if report.calls:
        timed = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in report.calls.items())
        console.print(f"calls: {timed}")
    compute = report.phases.get("deploy compute")
    if compute and report.vms_done:
        console.print(
            f"VMs: {report.vms_done} of {report.vms} created, {report.vms_done / compute:.0f} VMs/s"
        )
    if report.test:
        test = report.test
        console.print(
            f"ping pairs: {test.get('passed', 0)} passed, {test.get('failed', 0)} failed of "
            f"{test.get('pairs_tried', 0)} tried; isolation held for {test.get('isolation_held', 0)} of "
            f"{test.get('isolation_pairs_tried', 0)} cross-VPC pairs; "
            f"RTT p50 {test.get('rtt_p50_ms', 0):.2f} ms, p99 {test.get('rtt_p99_ms', 0):.2f} ms"
        )
    for error in report.errors:
        console.print(f"[red]FAILED[/red] {error}")
    if report.ok:
        console.print("[green]teste2e passed[/green]")
