"""`merak`: run the local stack (up / down / status), check the machine (doctor), the demo, the labs.

`parser` reads the command line; each area's commands have a module of their own: `stack` (up, down,
status), `demo`, `doctor`, `labs`, `topology` (exec, fault: a running lab from inside), and `alcor`
(push a goal state to a host's agent).
"""

from __future__ import annotations

import sys
from pathlib import Path

from merak.faultspec import process_fault
from merak.logs import configure_logging
from merak.v1 import topology_pb2
from merak_tools.cli.alcor import cmd_alcor_push
from merak_tools.cli.demo import cmd_demo
from merak_tools.cli.doctor import cmd_doctor
from merak_tools.cli.labs import cmd_labs, labs_endpoints
from merak_tools.cli.parser import parse
from merak_tools.cli.stack import cmd_down, cmd_status, cmd_up
from merak_tools.cli.topology import cmd_exec, cmd_fault
from merak_tools.doctor import Plan
from merak_tools.localstack import StackSettings


def main(argv: list[str] | None = None) -> int:
    """Console script `merak`."""
    args, unknown = parse(argv)
    settings = StackSettings()
    if args.command == "exec":
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return cmd_exec(settings, args.topology, args.vhost, args.vm, command)
    if args.command == "fault":
        hosts: list[topology_pb2.HostFault] = []
        processes: list[topology_pb2.ProcessFault] = []
        for targets, state in (
            (args.crash, topology_pb2.HOST_CRASHED),
            (args.freeze, topology_pb2.HOST_FROZEN),
        ):
            for target in targets:
                process = process_fault(target, state)
                if process is not None:
                    processes.append(process)
                else:
                    hosts.append(topology_pb2.HostFault(vhost=target, state=state))
        wanted = topology_pb2.SetFaultsRequest(
            links=args.link, partitions=args.partition, hosts=hosts, processes=processes
        )
        return cmd_fault(settings, args.action, args.topology, wanted)
    if args.command == "alcor":
        return cmd_alcor_push(
            settings, Path(args.file), topology_id=args.topology, vhost=args.vhost, address=args.address,
            v1=args.v1, as_json=args.json,
        )  # fmt: skip
    if args.command == "labs":
        return cmd_labs(
            labs_endpoints(settings, args), args.action, args.lab, every=args.all, configs=args.configs,
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
