"""`teste2e`: Merak's end-to-end test against a running stack, over the scenario service's gRPC API.

Builds Merak's e2e scenario (by default 5 hosts x 10 VMs, 1 VPC, 1 subnet), deploys topology,
network and compute with live progress, runs the ping-all test, prints a summary, writes a JSON
report and tears everything down (unless --keep), checking that nothing is left.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path

from merak.faultspec import parse_scheduled_fault
from merak.grpcclient import open_channel
from merak_tools import report_html
from merak_tools.teste2e.flow import Runner
from merak_tools.teste2e.options import Options
from merak_tools.teste2e.report import Report, console, print_summary
from merak_tools.teste2e.rest import RestRunner


def parse(argv: list[str] | None) -> Options:
    """Command line → options."""
    parser = argparse.ArgumentParser(prog="teste2e", description=__doc__)
    defaults = Options()
    parser.add_argument("--scenario-address", default=defaults.scenario_address)
    parser.add_argument(
        "--topology-address", default=defaults.topology_address, help="to verify the teardown"
    )
    parser.add_argument(
        "--compute-address", default=defaults.compute_address, help="to follow the teardown's VM deletion"
    )
    parser.add_argument("--hosts", type=int, default=defaults.hosts)
    parser.add_argument("--vms-per-host", type=int, default=defaults.vms_per_host)
    parser.add_argument("--vpcs", type=int, default=defaults.vpcs)
    parser.add_argument("--subnets", type=int, default=defaults.subnets, help="subnets per VPC")
    parser.add_argument("--racks", type=int, default=defaults.racks, help="0: as many as needed")
    parser.add_argument("--vhosts-per-rack", type=int, default=defaults.vhosts_per_rack)
    parser.add_argument("--ports-per-switch", type=int, default=defaults.ports_per_switch)
    parser.add_argument("--backend", default=defaults.backend, choices=["local", "kubernetes"])
    parser.add_argument("--dataplane", default=defaults.dataplane, choices=["real", "fake"])
    parser.add_argument("--plugin", default=defaults.plugin, choices=["native", "alcor", "ovn"])
    parser.add_argument("--alcor-ip", default="", help="Alcor's address (with --plugin alcor)")
    parser.add_argument(
        "--alcor-own-overlay",
        action="store_true",
        help="with --plugin alcor: program the hosts' overlay with our own push too (for an Alcor that "
        "cannot reach the hosts' goal-state servers); default: the data plane comes from Alcor's goal states",
    )
    parser.add_argument(
        "--block-prefix",
        type=int,
        default=defaults.block_prefix,
        help="give each host address blocks of this prefix length (8-29) and route the overlay by block "
        "(a host holds entries per remote host, not per remote VM); 0: off (native plugin only)",
    )
    parser.add_argument("--max-pairs", type=int, default=0, help="ping sample size (0: every pair)")
    parser.add_argument(
        "--rps", type=float, default=0.0, help="VMs started per second (Merak's RPS scheduler; 0: no pacing)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the lab up")
    parser.add_argument("--report", type=Path, default=defaults.report, help="JSON report path")
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds per phase")
    parser.add_argument("--name", default="", help="name tag of the configs")
    parser.add_argument(
        "--rest",
        default="",
        help="Merak's REST API (e.g. http://localhost:3000): drive the run over it; its token, if it asks "
        "for one, from MERAK_REST_TOKEN or MERAK_REST_TOKEN_FILE; https:// verifies it with MERAK_TLS_CA",
    )
    parser.add_argument(
        "--html", type=Path, default=None, help="write the report as one HTML page with plots"
    )
    parser.add_argument(
        "--churn-rate", type=float, default=0.0, help="once the VMs are made, replace this many per second"
    )
    parser.add_argument("--churn-seconds", type=float, default=0.0, help="for this long (with --churn-rate)")
    parser.add_argument(
        "--fault", dest="faults", action="append", type=parse_scheduled_fault, default=[],
        metavar="'at=S [for=S] [repeat=N every=S] [name=N] link=NODE:down|partition=A/B|crash=X|freeze=X'",
        help="a fault while compute deploys (repeatable), e.g. --fault 'at=5 for=10 link=vhost-1:loss=10'; "
        "X is a vhost (its agent) or an OVN process: ovn-northd, ovn-nb, ovn-sb, ovn-controller@VHOST",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if (
        min(
            args.hosts,
            args.vms_per_host,
            args.vpcs,
            args.subnets,
            args.vhosts_per_rack,
            args.ports_per_switch,
        )
        < 1
    ):
        parser.error("counts must be at least 1")
    if args.rps < 0:
        parser.error("--rps must be 0 (no pacing) or more")
    if args.churn_rate < 0 or args.churn_seconds < 0 or bool(args.churn_rate) != bool(args.churn_seconds):
        parser.error("--churn-rate and --churn-seconds go together, both above 0")
    if args.vms_per_host % (args.vpcs * args.subnets):
        # Merak's scenario manager divides with a floor (VMs per VPC / hosts / subnets): refuse counts
        # that would silently create fewer VMs than asked.
        parser.error("--vms-per-host must be a multiple of --vpcs x --subnets")
    if args.alcor_own_overlay and args.plugin != "alcor":
        parser.error("--alcor-own-overlay goes with --plugin alcor")
    if args.block_prefix and args.plugin != "native":
        parser.error("--block-prefix goes with the native plugin")
    return Options(**{k: v for k, v in vars(args).items()})


async def main_async(opts: Options) -> Report:
    """Run with Ctrl-C tearing down what was created."""
    async with open_channel(opts.scenario_address) as channel:
        runner = RestRunner(opts, channel) if opts.rest else Runner(opts, channel)
        task = asyncio.create_task(runner.run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return runner.report


def write_reports(report: Report, opts: Options) -> None:
    """The report as JSON at `--report`, and as one HTML page at `--html` when asked."""
    document = vars(report) | {"ok": report.ok}
    opts.report.write_text(json.dumps(document, indent=2, default=str))
    if opts.html is not None:
        opts.html.write_text(report_html.render(json.loads(json.dumps(document, default=str))))
        console.print(f"html report: {opts.html}")


def main(argv: list[str] | None = None) -> int:
    """Console script `teste2e`; exit 0 only when every phase passed and nothing was left behind."""
    opts = parse(argv)
    report = asyncio.run(main_async(opts))
    write_reports(report, opts)
    print_summary(report)
    console.print(f"report: {opts.report}")
    if opts.keep and report.ok:
        console.print(
            f"lab kept (scenario {report.ids.get('scenario')}); look around: `ip netns list`, "
            f"`merak exec vhost-0 v0-0-0 -- ip addr`, `merak labs show {report.ids.get('scenario')}`; "
            f"tear it down with `merak labs destroy {report.ids.get('scenario')}`"
        )
    return 0 if report.ok else 1
