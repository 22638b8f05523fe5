"""`merak`: run the local stack (up / down / status) and the demo."""

from __future__ import annotations

import argparse
import sys

import grpc
from rich.console import Console
from rich.table import Table

from merak.localstack import SERVICES, LocalStack, StackError, StackSettings, endpoints, grpc_healthy

console = Console()


def _print_status(stack: LocalStack) -> bool:
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
    return all_up


def _print_endpoints(settings: StackSettings) -> None:
    table = Table(title="endpoints", show_header=False)
    for name, where in endpoints(settings):
        table.add_row(name, where)
    console.print(table)
    console.print("try: grpcurl -plaintext localhost:40050 list")


def cmd_up(settings: StackSettings) -> int:
    """Start the stack and print where everything answers."""
    stack = LocalStack(settings, out=console.print)
    try:
        stack.up()
    except StackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 1
    _print_status(stack)
    _print_endpoints(settings)
    return 0


def cmd_down(settings: StackSettings, keep_labs: bool = False) -> int:
    """Delete running labs, then stop what `up` started."""
    try:
        stopped = LocalStack(settings, out=console.print).down(keep_labs=keep_labs)
    except grpc.RpcError as exc:
        console.print(f"[red]error:[/red] deleting the labs failed: {exc}; nothing was stopped")
        return 1
    console.print("nothing was running" if not stopped else f"stopped: {', '.join(stopped)}")
    return 0


def cmd_status(settings: StackSettings) -> int:
    """Show what runs; exit 0 only when every component is serving."""
    return 0 if _print_status(LocalStack(settings)) else 3


def cmd_demo(settings: StackSettings) -> int:
    """Bring the stack up and check every service's health over gRPC."""
    if cmd_up(settings) != 0:
        return 1
    ports = {name: settings.grpc_port(name) for name in SERVICES}
    failed = [name for name, port in ports.items() if not grpc_healthy(f"127.0.0.1:{port}")]
    for name, port in ports.items():
        mark = "[red]FAIL[/red]" if name in failed else "[green]SERVING[/green]"
        console.print(f"health {name:<9} localhost:{port}  {mark}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Console script `merak`."""
    parser = argparse.ArgumentParser(prog="merak", description="Merak in Python: local cloud emulator stack")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start Redis, Temporal and every service on this machine")
    down = sub.add_parser("down", help="delete running labs, then stop exactly what `up` started")
    down.add_argument(
        "--keep-labs", action="store_true", help="leave running topologies (agents, namespaces)"
    )
    sub.add_parser("status", help="show what runs")
    sub.add_parser("demo", help="bring the stack up and run the end-to-end demo")
    args = parser.parse_args(argv)
    settings = StackSettings()
    if args.command == "down":
        return cmd_down(settings, keep_labs=args.keep_labs)
    commands = {"up": cmd_up, "status": cmd_status, "demo": cmd_demo}
    return commands[args.command](settings)


if __name__ == "__main__":
    sys.exit(main())
