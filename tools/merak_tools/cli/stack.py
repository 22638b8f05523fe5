"""`merak up`, `merak down`, `merak status`: the local stack."""

from __future__ import annotations

import os

from rich.table import Table

from merak.tls import ENV_CA, ENV_CERT, ENV_KEY, TlsFiles
from merak_tools.cli.output import console, say
from merak_tools.localstack import LabsLeft, LocalStack, StackError, StackSettings, endpoints


def _print_status(stack: LocalStack) -> bool:
    """A table of the stack's components; True when every one is serving."""
    table = Table(title="merak local stack")
    for column in ("component", "pid", "state", "ports"):
        table.add_column(column)
    all_up = True
    for state in stack.status():
        if state.healthy:
            label = "[green]serving[/green]"
        elif state.running:
            label = "[yellow]running, not healthy[/yellow]"
        else:
            label = "[red]stopped[/red]"
        all_up &= state.healthy
        ports = ", ".join(f"{k} {v}" for k, v in state.component.ports.items())
        table.add_row(state.component.name, str(state.pid or "-"), label, ports)
    console.print(table)
    if stack.ovn_off:
        console.print(f"OVN central: off, {stack.ovn_off}")
    return all_up


def _print_endpoints(settings: StackSettings, *, ovn: bool) -> None:
    """Where each service, Temporal, Redis and OVN central answer, and a first grpcurl to try."""
    table = Table(title="endpoints", show_header=False)
    for name, where in endpoints(settings, ovn=ovn):
        table.add_row(name, where)
    console.print(table)
    console.print(f"try: grpcurl {grpcurl_security()} localhost:{settings.grpc_port('scenario')} list")


def grpcurl_security() -> str:
    """grpcurl's flags for this environment's TLS settings (merak.tls)."""
    files = TlsFiles.from_env()
    if files is None:
        return "-plaintext"
    flags = [f"-cacert {os.environ[ENV_CA]}"] if os.environ.get(ENV_CA) else []
    if files.client_auth:
        flags += [f"-cert {os.environ[ENV_CERT]}", f"-key {os.environ[ENV_KEY]}"]
    return " ".join(flags) or "-insecure"


def cmd_up(settings: StackSettings) -> int:
    """Start the stack and print where everything answers."""
    stack = LocalStack(settings, out=say)
    try:
        stack.up()
    except StackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    _print_status(stack)
    _print_endpoints(settings, ovn=not stack.ovn_off)
    return 0


def cmd_down(settings: StackSettings, keep_labs: bool = False) -> int:
    """Delete running labs, then stop what `up` started."""
    failed: LabsLeft | None = None
    try:
        stopped = LocalStack(settings, out=say).down(keep_labs=keep_labs)
    except LabsLeft as exc:
        failed, stopped = exc, exc.stopped
    console.print("nothing was running" if not stopped else f"stopped: {', '.join(stopped)}")
    if failed is not None:
        console.print("[red]error:[/red] ", end="")
        say(str(failed))
        return 1
    return 0


def cmd_status(settings: StackSettings) -> int:
    """Show what runs; exit 0 only when every component is serving."""
    return 0 if _print_status(LocalStack(settings)) else 3
