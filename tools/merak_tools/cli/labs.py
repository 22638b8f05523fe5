"""`merak labs`: list, show and destroy the labs of a stack."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from rich.box import SIMPLE_HEAD
from rich.markup import escape
from rich.table import Table

from merak_tools.cli.output import console, say, wide_console
from merak_tools.labs import Destroyed, Endpoints, Lab, LabDetail, LabError, LabsClient, UnknownLab
from merak_tools.localstack import StackSettings


def labs_endpoints(settings: StackSettings, args: argparse.Namespace) -> Endpoints:
    """The stack's services (the local stack's ports, MERAK_PORT_OFFSET included) unless flags say others."""
    local = {name: settings.grpc_address(name) for name in ("scenario", "topology", "compute")}
    rest = "" if args.scenario_address else f"{settings.rest_url}/api"
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
    wide = wide_console(180)
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
    lab, wide = detail.lab, wide_console()
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
        say(f"destroyed scenario {destroyed.id}{name}: its VMs, network and topology {destroyed.topology_id}")
    else:
        say(f"destroyed topology {destroyed.id}{name}")
    for config in destroyed.configs_deleted:
        say(f"  deleted {config}")
    for config in destroyed.configs_kept:
        say(f"  kept {config}")


def _error(message: str) -> None:
    """An error line, never wrapped (ids stay whole for copying)."""
    console.print(f"[red]error:[/red] {message}", soft_wrap=True, highlight=False)


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
        _error(str(exc))
        return 2
    except LabError as exc:
        _error(str(exc))
        return 1
    failed = 0
    for lab, outcome in outcomes:
        if isinstance(outcome, Destroyed):
            _said_destroyed(outcome)
        else:
            failed += 1
            _error(f"{lab.kind} {lab.id}: {outcome}")
    if not outcomes:
        say("no labs to destroy")
    elif failed:
        console.print(f"[red]{failed} of {len(outcomes)} labs were not destroyed[/red]")
    return 1 if failed else 0
