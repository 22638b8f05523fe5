"""The `merak` command line: its commands and options, and the combinations it refuses."""

from __future__ import annotations

import argparse

from merak.faultspec import parse_link_fault, parse_partition
from merak_tools.doctor import Plan


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


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Command line → (arguments, what `demo` passes on to teste2e); exits with usage on a bad one."""
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
        "--crash", action="append", default=[], metavar="VHOST|PROCESS",
        help="kill a vhost's agent and keep it down, or an OVN process: ovn-northd, ovn-nb, ovn-sb "
        "(the stack restarts it) or ovn-controller@VHOST (down until healed)",
    )  # fmt: skip
    fault.add_argument(
        "--freeze", action="append", default=[], metavar="VHOST|PROCESS",
        help="SIGSTOP a vhost's agent or an OVN process (as --crash names them) until healed",
    )  # fmt: skip
    alcor = sub.add_parser(
        "alcor",
        help="Alcor's southbound by hand: merak alcor push GOALSTATE.json --vhost vhost-1 (prints the reply)",
    )
    alcor.add_argument("action", choices=["push"])
    alcor.add_argument("file", help="a GoalStateV2 (or GoalState with --v1) as JSON or protobuf text")
    alcor.add_argument("--vhost", default="", help="the emulated host whose agent gets it")
    alcor.add_argument("--topology", default="", help="topology id (default: the only one running)")
    alcor.add_argument("--address", default="", help="an agent's address instead (HOST:PORT or unix:PATH)")
    alcor.add_argument("--v1", action="store_true", help="a GoalState through PushNetworkResourceStates")
    alcor.add_argument("--json", action="store_true", help="print the reply as JSON")
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
    if args.command == "labs" and (problem := _labs_usage(args)):
        labs.error(problem)
    return args, unknown
