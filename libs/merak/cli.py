"""`merak`: run the local stack (up / down / status), check the machine (doctor), the demo."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import asdict

import grpc
from rich.box import SIMPLE_HEAD
from rich.console import Console
from rich.table import Table

from merak import teste2e
from merak.doctor import Plan, failures, run_checks
from merak.faultspec import (
    host_state,
    link_what,
    link_where,
    parse_link_fault,
    parse_partition,
    partition_what,
)
from merak.grpcclient import health_serving_blocking, open_blocking_channel
from merak.host import HostTuner
from merak.localstack import SERVICES, LocalStack, StackError, StackSettings, endpoints
from merak.logs import configure_logging
from merak.naming import topology_short_id
from merak.tls import ENV_CA, ENV_CERT, ENV_KEY, TlsFiles
from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc

console = Console()


def _say(line: str) -> None:
    """One line of `up`/`down` progress, never wrapped (paths and settings stay whole for copying)."""
    console.print(line, soft_wrap=True, markup=False, highlight=False)


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
    console.print(f"try: grpcurl {_grpcurl_security()} localhost:{settings.grpc_port('scenario')} list")


def _grpcurl_security() -> str:
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
    stack = LocalStack(settings, out=_say)
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
        stopped = LocalStack(settings, out=_say).down(keep_labs=keep_labs)
    except grpc.RpcError as exc:
        console.print(f"[red]error:[/red] deleting the labs failed: {exc}; nothing was stopped")
        return 1
    console.print("nothing was running" if not stopped else f"stopped: {', '.join(stopped)}")
    return 0


def cmd_status(settings: StackSettings) -> int:
    """Show what runs; exit 0 only when every component is serving."""
    return 0 if _print_status(LocalStack(settings)) else 3


def cmd_demo(settings: StackSettings, extra: list[str]) -> int:
    """Bring the stack up, run Merak's e2e scenario (5 hosts x 10 VMs, ping-all), leave the stack up."""
    if cmd_up(settings) != 0:
        return 1
    failed = [
        name for name in SERVICES if not health_serving_blocking(f"127.0.0.1:{settings.grpc_port(name)}")
    ]
    if failed:
        console.print(f"[red]error:[/red] not serving: {', '.join(failed)}")
        return 1
    argv = [
        "--scenario-address", f"localhost:{settings.grpc_port('scenario')}",
        "--topology-address", f"localhost:{settings.grpc_port('topology')}",
        "--report", str(settings.state_dir / "teste2e-report.json"),
        *extra,
    ]  # fmt: skip
    code = teste2e.main(argv)
    console.print(
        "\n[bold]Look around[/bold] (the stack is still up; `merak down` stops it):\n"
        f"  Temporal UI (every workflow): http://localhost:{settings.temporal_ui_port}, namespace merak\n"
        f"  grpcurl {_grpcurl_security()} localhost:{settings.grpc_port('scenario')} list\n"
        f"  grpcurl {_grpcurl_security()} localhost:{settings.grpc_port('topology')} "
        "topology.MerakTopologyService/ListTopologies\n"
        "  keep the lab to explore it: merak demo --keep   (or teste2e --keep)\n"
        "  then: ip netns list | grep mk-          # emulated hosts, switches, VMs\n"
        "        merak exec vhost-0 v0-0-0 -- ip addr          # inside a VM\n"
        "        merak exec vhost-0 v0-0-0 -- ping -c 2 10.1.0.12\n"
        f"  metrics: curl -s localhost:{settings.metrics_port('compute-worker')}/metrics | grep merak_"
    )
    return code


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
            _say(f"raised {change}")
        for short in sizing.shortfalls:
            _say(f"cannot raise {short}")
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
    wide = Console(width=max(console.width, 160))
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


def cmd_exec(settings: StackSettings, topology_id: str, vhost: str, vm: str, command: list[str]) -> int:
    """Run `command` inside a VM's namespace (or the vhost's, with vm "-"): `ip netns exec`, no shell."""
    if not command:
        console.print("[red]error:[/red] no command: merak exec vhost-0 v0-0-0 -- ip addr")
        return 2
    for what, name in (("vhost", vhost), ("vm", vm)):
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}|-", name):
            console.print(f"[red]error:[/red] {what} {name!r} is not a valid name")
            return 2
    address = f"127.0.0.1:{settings.grpc_port('topology')}"
    with open_blocking_channel(address) as ch:
        stub = topology_pb2_grpc.MerakTopologyServiceStub(ch)
        try:
            topology_id = topology_id or _only_topology(stub)
            if not topology_id:
                return 2
            info = stub.TopologyHandler(
                topology_pb2.InternalTopologyInfo(
                    operation_type=common_pb2.INFO,
                    config=topology_pb2.InternalTopologyConfiguration(topology_id=topology_id),
                ),
                timeout=30,
            )
        except grpc.RpcError as exc:
            console.print(f"[red]error:[/red] topology service at {address}: {exc}")
            return 1
    names = [node.name for node in info.compute_nodes]
    if vhost not in names:
        console.print(f"[red]error:[/red] no vhost {vhost!r} in topology {topology_id}")
        return 2
    if info.compute_nodes[0].dataplane == "fake":
        console.print("[red]error:[/red] the topology's dataplane is fake: there is nothing to exec into")
        return 2
    short = topology_short_id(topology_id)
    namespace = f"mk-{short}-{vhost}" if vm == "-" else f"mk-{short}-{names.index(vhost)}-{vm}"
    if not os.path.exists(f"/run/netns/{namespace}"):
        console.print(f"[red]error:[/red] {namespace} does not exist (no VM {vm!r} on {vhost}?)")
        return 2
    os.execvp("ip", ["ip", "netns", "exec", namespace, *command])  # replaces this process


def _only_topology(stub: topology_pb2_grpc.MerakTopologyServiceStub) -> str:
    """The one running topology's id ("" after saying why there is not exactly one)."""
    listed = stub.ListTopologies(topology_pb2.ListTopologiesRequest(), timeout=10).topologies
    if len(listed) != 1:
        running = ", ".join(t.topology_id for t in listed) or "none"
        console.print(f"[red]error:[/red] pick a topology with --topology (running: {running})")
        return ""
    return listed[0].topology_id


def cmd_fault(
    settings: StackSettings,
    action: str,
    topology_id: str,
    request: topology_pb2.SetFaultsRequest,
) -> int:
    """Set (exactly these), list or clear the impairments of a running lab."""
    address = f"127.0.0.1:{settings.grpc_port('topology')}"
    with open_blocking_channel(address) as channel:
        stub = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        try:
            topology_id = topology_id or _only_topology(stub)
            if not topology_id:
                return 2
            if action == "set":
                request.topology_id = topology_id
                reply = stub.SetFaults(request, timeout=120)
            elif action == "clear":
                reply = stub.ClearFaults(
                    topology_pb2.ClearFaultsRequest(topology_id=topology_id), timeout=120
                )
            else:
                reply = stub.ListFaults(topology_pb2.ListFaultsRequest(topology_id=topology_id), timeout=30)
        except grpc.RpcError as exc:
            console.print(f"[red]error:[/red] {exc.code().name}: {exc.details()}")
            return 1
    table = Table(title=f"faults of {topology_id}")
    table.add_column("where")
    table.add_column("what")
    for link in reply.links:
        table.add_row(f"link {link_where(link)}", link_what(link) or "nothing")
    for partition in reply.partitions:
        table.add_row("partition", partition_what(partition))
    for host in reply.hosts:
        table.add_row(f"host {host.vhost}", host_state(host))
    faulted = reply.links or reply.partitions or reply.hosts
    console.print(table if faulted else f"{topology_id}: no faults")
    return 0


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
    doctor = sub.add_parser(
        "doctor", help="check this machine: root, kernel features, sysctls, binaries, memory"
    )
    defaults = Plan()
    doctor.add_argument("--vhosts", type=int, default=defaults.vhosts, help="size the checks for this lab")
    doctor.add_argument("--vms", type=int, default=defaults.vms, help="VMs in that lab, all vhosts together")
    doctor.add_argument("--vpcs", type=int, default=defaults.vpcs)
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument(
        "--fix", action="store_true", help="raise the kernel settings that are too low for that lab (root)"
    )
    sub.add_parser(
        "demo",
        help="stack up + the end-to-end demo (5 hosts x 10 VMs); teste2e options pass through",
    )
    run = sub.add_parser(
        "exec", help="run a command inside an emulated VM: merak exec vhost-0 v0-0-0 -- ip addr"
    )
    run.add_argument("--topology", default="", help="topology id (default: the only one running)")
    run.add_argument("vhost")
    run.add_argument("vm", help='VM name, or "-" for the vhost itself')
    run.add_argument("argv", nargs=argparse.REMAINDER, help="the command, after --")
    fault = sub.add_parser(
        "fault",
        help="impair a running lab: merak fault set --link vhost-2:loss=5 --partition vhost-0/vhost-1",
    )
    fault.add_argument(
        "action", choices=["set", "list", "clear"], help="set exactly these faults; list; clear all"
    )
    fault.add_argument("--topology", default="", help="topology id (default: the only one running)")
    fault.add_argument(
        "--link", action="append", type=parse_link_fault, default=[], metavar="NODE[/NIC]:SETTINGS",
        help="down, loss=PERCENT, rate=10mbit, delay=MS, jitter=MS (comma-separated); repeatable",
    )  # fmt: skip
    fault.add_argument(
        "--partition", action="append", type=parse_partition, default=[], metavar="A1,A2/B1",
        help="vhosts on each side of a partition; repeatable",
    )  # fmt: skip
    fault.add_argument(
        "--crash", action="append", default=[], metavar="VHOST", help="kill its agent, keep it down"
    )
    fault.add_argument("--freeze", action="append", default=[], metavar="VHOST", help="SIGSTOP its agent")
    # `merak demo --keep --hosts 3`: options argparse does not know belong to teste2e.
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "demo":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    settings = StackSettings()
    if args.command == "exec":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return cmd_exec(settings, args.topology, args.vhost, args.vm, command)
    if args.command == "fault":
        hosts = [topology_pb2.HostFault(vhost=v, state=topology_pb2.HOST_CRASHED) for v in args.crash]
        hosts += [topology_pb2.HostFault(vhost=v, state=topology_pb2.HOST_FROZEN) for v in args.freeze]
        wanted = topology_pb2.SetFaultsRequest(links=args.link, partitions=args.partition, hosts=hosts)
        return cmd_fault(settings, args.action, args.topology, wanted)
    if args.command == "doctor":
        plan = Plan(vhosts=args.vhosts, vms=args.vms, vpcs=args.vpcs)
        return cmd_doctor(plan, as_json=args.json, fix=args.fix)
    if args.command == "down":
        return cmd_down(settings, keep_labs=args.keep_labs)
    if args.command == "demo":
        return cmd_demo(settings, [a for a in unknown if a != "--"])
    commands = {"up": cmd_up, "status": cmd_status}
    return commands[args.command](settings)


def run() -> None:
    """The `merak` program: what a command does is printed for people, logs only when something is
    wrong (set up here, not in `main`, so that calling `main` leaves a host process's logging alone)."""
    configure_logging("WARNING", "console", service="merak")
    sys.exit(main())


if __name__ == "__main__":
    run()
