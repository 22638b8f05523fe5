"""`merak`: run the local stack (up / down / status), check the machine (doctor), the demo, the labs."""

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
from rich.markup import escape
from rich.table import Table

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
from merak.logs import configure_logging
from merak.naming import topology_short_id
from merak.tls import ENV_CA, ENV_CERT, ENV_KEY, TlsFiles
from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc
from merak_tools import teste2e
from merak_tools.doctor import Plan, failures, run_checks
from merak_tools.labs import Destroyed, Endpoints, Lab, LabDetail, LabError, LabsClient, UnknownLab
from merak_tools.localstack import SERVICES, LocalStack, StackError, StackSettings, endpoints

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


def _labs_endpoints(settings: StackSettings, args: argparse.Namespace) -> Endpoints:
    """The stack's services (the local stack's ports, MERAK_PORT_OFFSET included) unless flags say others."""
    local = {name: f"127.0.0.1:{settings.grpc_port(name)}" for name in ("scenario", "topology", "compute")}
    rest = "" if args.scenario_address else f"http://localhost:{settings.rest_port}/api"
    return Endpoints(
        scenario=args.scenario_address or local["scenario"],
        topology=args.topology_address or local["topology"],
        compute=args.compute_address or local["compute"],
        rest=rest,
    )


def _vms(lab: Lab) -> str:
    """A lab's VMs for a table cell: their number once made, else done/total, the operation and errors."""
    vms = lab.vms
    if vms is None:
        return "-"
    if vms.settled and vms.operation != "DELETE":
        return str(vms.total)
    text = f"{vms.done}/{vms.total} {vms.operation.lower() or '?'}"
    if vms.error:
        text += f", {vms.error} error"
    if vms.failure:
        text += ", failed"
    return text


def _vhosts(lab: Lab) -> str:
    if lab.running:
        return str(lab.vhosts)
    return f"- ({lab.planned_vhosts} planned)" if lab.planned_vhosts else "-"


def _print_labs(labs: list[Lab], endpoints: Endpoints) -> None:
    wide = Console(width=max(console.width, 180))
    if not labs:
        wide.print(
            f"no labs: no scenario in {endpoints.scenario}, no topology runs in {endpoints.topology}",
            markup=False,
        )
        return
    table = Table(
        title=f"labs of scenario {endpoints.scenario}, topology {endpoints.topology}",
        title_justify="left",
        box=SIMPLE_HEAD,
    )
    for column in ("lab", "name", "status", "topology", "network", "compute", "running"):
        table.add_column(column, no_wrap=True)
    table.add_column("vhosts", justify="right", no_wrap=True)
    table.add_column("VMs", justify="right", no_wrap=True)
    for column in ("plugin", "backend/dataplane"):
        table.add_column(column, no_wrap=True)
    noted = any(lab.note for lab in labs)
    if noted:
        table.add_column("note", overflow="fold")
    for lab in labs:
        scenario = lab.kind == "scenario"
        cells = [
            lab.id,
            escape(lab.name),
            lab.status if scenario else "[yellow]no scenario[/yellow]",
            lab.topology_status or "-",
            lab.network_status or "-",
            lab.compute_status or "-",
            lab.running or "-",
            _vhosts(lab),
            _vms(lab),
            lab.plugin or "-",
            f"{lab.backend}/{lab.dataplane}",
        ]
        table.add_row(*cells, *([escape(lab.note)] if noted else []))
    wide.print(table)
    bare = sum(lab.kind == "topology" for lab in labs)
    wide.print(
        f"{_count(len(labs) - bare, 'scenario')}, {_count(bare, 'topology', 'topologies')} without a "
        "scenario; running: the topology as the topology service sees it now\n"
        "merak labs show LAB | merak labs destroy LAB | merak labs destroy --all",
        soft_wrap=True,
    )


def _count(n: int, noun: str, plural: str = "") -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _print_lab(detail: LabDetail) -> None:
    lab, wide = detail.lab, Console(width=max(console.width, 160))
    about = Table(title=f"{lab.kind} {lab.id}", title_justify="left", show_header=False, box=SIMPLE_HEAD)
    about.add_column(no_wrap=True)
    about.add_column(overflow="fold")
    if lab.kind == "scenario":
        about.add_row("name", escape(lab.name))
        about.add_row(
            "status",
            f"{lab.status} (topology {lab.topology_status}, network {lab.network_status}, "
            f"compute {lab.compute_status})",
        )
    else:
        about.add_row("name", f"{escape(lab.name) or '-'} (a bare topology: no scenario refers to it)")
    about.add_row("topology", f"{lab.topology_id} ({lab.running or 'not running'})")
    ready = sum(h.status == "READY" for h in detail.hosts)
    vhosts = f"{ready} of {len(detail.hosts)} READY" if lab.running else "none running"
    about.add_row("vhosts", vhosts + (f" ({lab.planned_vhosts} planned)" if lab.planned_vhosts else ""))
    vms = lab.vms
    if vms is not None:
        about.add_row(
            "VMs",
            f"{vms.done} of {vms.total} done ({vms.operation}{'' if vms.finished else ', running'}); "
            f"{vms.deploying} deploying, {vms.deleting} deleting, {vms.error} in error"
            + (f"; failed: {vms.failure}" if vms.failure else ""),
        )
    else:
        about.add_row("VMs", "none")
    about.add_row("plugin", lab.plugin or "-")
    about.add_row("data plane", f"{lab.dataplane} (backend {lab.backend})")
    for kind, config_id in lab.configs.items():
        about.add_row(f"{kind} config", config_id)
    if lab.note:
        about.add_row("note", escape(lab.note))
    endpoints = detail.endpoints
    about.add_row("scenario service", endpoints.scenario)
    about.add_row("topology service", endpoints.topology)
    about.add_row("compute service", endpoints.compute)
    if endpoints.rest and lab.kind == "scenario":
        about.add_row("REST", f"{endpoints.rest}/scenarios/{lab.id}")
    for i, hint in enumerate(detail.exec_hints):
        about.add_row("get inside" if i == 0 else "", escape(hint))
    wide.print(about)
    if not detail.hosts:
        return
    hosts = Table(title="hosts", title_justify="left", box=SIMPLE_HEAD)
    for column in ("vhost", "data-plane IP", "status", "agent endpoint"):
        hosts.add_column(column, no_wrap=True)
    hosts.add_column("detail", overflow="fold")
    shown = detail.hosts[:LABS_HOSTS_SHOWN]
    for host in shown:
        hosts.add_row(host.name, host.datapath_ip, host.status, host.agent_endpoint, escape(host.detail))
    wide.print(hosts)
    if len(detail.hosts) > len(shown):
        wide.print(f"… and {len(detail.hosts) - len(shown)} more vhosts (--json lists them all)")


# `merak labs show` prints this many vhosts (a fake lab can hold 100,000).
LABS_HOSTS_SHOWN = 100


def _said_destroyed(destroyed: Destroyed) -> None:
    name = f" ({destroyed.name})" if destroyed.name else ""
    if destroyed.kind == "scenario":
        _say(
            f"destroyed scenario {destroyed.id}{name}: its VMs, network and topology {destroyed.topology_id}"
        )
    else:
        _say(f"destroyed topology {destroyed.id}{name}")
    for config in destroyed.configs_deleted:
        _say(f"  deleted {config}")
    for config in destroyed.configs_kept:
        _say(f"  kept {config}")


def cmd_labs(
    endpoints: Endpoints,
    action: str,
    ref: str,
    *,
    every: bool = False,
    configs: bool = False,
    as_json: bool = False,
    timeout: float = 1200.0,
) -> int:
    """List, show or destroy the labs (scenarios, and topologies no scenario deployed) of a stack."""
    try:
        with LabsClient(endpoints, destroy_timeout=timeout) as client:
            if action == "list":
                labs = client.labs()
                if as_json:
                    print(json.dumps([asdict(lab) for lab in labs], indent=2))
                else:
                    _print_labs(labs, endpoints)
                return 0
            if action == "show":
                detail = client.show(ref)
                if as_json:
                    print(json.dumps(asdict(detail), indent=2))
                else:
                    _print_lab(detail)
                return 0
            if not every:
                _said_destroyed(client.destroy(ref, configs=configs))
                return 0
            outcomes = client.destroy_all(configs=configs)
    except UnknownLab as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        return 2
    except LabError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        return 1
    failed = 0
    for lab, outcome in outcomes:
        if isinstance(outcome, Destroyed):
            _said_destroyed(outcome)
        else:
            failed += 1
            console.print(
                f"[red]error:[/red] {lab.kind} {lab.id}: {outcome}", soft_wrap=True, highlight=False
            )
    if not outcomes:
        _say("no labs to destroy")
    elif failed:
        console.print(f"[red]{failed} of {len(outcomes)} labs were not destroyed[/red]")
    return 1 if failed else 0


def _labs_usage(args: argparse.Namespace) -> str:
    """What is wrong with a `merak labs` command line ("" when nothing)."""
    if args.action == "list" and args.lab:
        return f"list takes no lab (got {args.lab!r}): merak labs show {args.lab}"
    if args.action == "show" and not args.lab:
        return "show needs a lab: merak labs show LAB"
    if args.action == "destroy" and bool(args.lab) == args.all:
        return "destroy needs a lab or --all (not both): merak labs destroy LAB | merak labs destroy --all"
    if args.action != "destroy" and (args.all or args.configs):
        return "--all and --configs go with destroy"
    if args.action == "destroy" and args.json:
        return "--json goes with list and show"
    return ""


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
    labs = sub.add_parser(
        "labs",
        help="the labs (scenarios, bare topologies): merak labs [list] | show LAB | destroy LAB|--all",
    )
    labs.add_argument("action", nargs="?", default="list", choices=["list", "show", "destroy"])
    labs.add_argument(
        "lab", nargs="?", default="", help="a scenario id, a unique scenario name or a topology id"
    )
    labs.add_argument("--all", action="store_true", help="destroy: every lab")
    labs.add_argument(
        "--configs", action="store_true",
        help="destroy: also the configs the scenario named that no other scenario uses",
    )  # fmt: skip
    labs.add_argument("--json", action="store_true", help="list, show: print JSON")
    labs.add_argument(
        "--timeout", type=float, default=1200.0, help="destroy: seconds to wait for each teardown"
    )
    for name in ("scenario", "topology", "compute"):
        labs.add_argument(
            f"--{name}-address", default="", metavar="HOST:PORT",
            help=f"the {name} service (default: the local stack's)",
        )  # fmt: skip
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
    if args.command == "labs":
        problem = _labs_usage(args)
        if problem:
            labs.error(problem)
        return cmd_labs(
            _labs_endpoints(settings, args), args.action, args.lab, every=args.all, configs=args.configs,
            as_json=args.json, timeout=args.timeout,
        )  # fmt: skip
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
