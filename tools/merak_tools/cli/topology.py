"""`merak exec` and `merak fault`: into a running lab's VMs, and its impairments."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from rich.table import Table

from merak.faultspec import host_state, link_what, link_where, partition_what, process_where
from merak.grpcclient import open_blocking_channel
from merak.naming import topology_short_id
from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc
from merak_tools.cli.output import console
from merak_tools.localstack import StackSettings


def cmd_exec(settings: StackSettings, topology_id: str, vhost: str, vm: str, command: list[str]) -> int:
    """Run `command` inside a VM's namespace (or the vhost's, with vm "-"): `ip netns exec`, no shell."""
    if not command:
        console.print("[red]error:[/red] no command: merak exec vhost-0 v0-0-0 -- ip addr")
        return 2
    for what, name in (("vhost", vhost), ("vm", vm)):
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,31}|-", name):
            console.print(f"[red]error:[/red] {what} {name!r} is not a valid name")
            return 2
    try:
        with _topology_service(settings) as stub:
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
        console.print(f"[red]error:[/red] topology service at {settings.grpc_address('topology')}: {exc}")
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


@contextmanager
def _topology_service(settings: StackSettings) -> Iterator[topology_pb2_grpc.MerakTopologyServiceStub]:
    """The stack's topology service, for one command."""
    with open_blocking_channel(settings.grpc_address("topology")) as channel:
        yield topology_pb2_grpc.MerakTopologyServiceStub(channel)


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
    try:
        with _topology_service(settings) as stub:
            topology_id = topology_id or _only_topology(stub)
            if not topology_id:
                return 2
            if action == "set":
                request.topology_id = topology_id
                reply = stub.SetFaults(request, timeout=120)
            elif action == "clear":
                clear = topology_pb2.ClearFaultsRequest(topology_id=topology_id)
                reply = stub.ClearFaults(clear, timeout=120)
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
    for process in reply.processes:
        table.add_row(f"process {process_where(process)}", host_state(process))
    faulted = reply.links or reply.partitions or reply.hosts or reply.processes
    console.print(table if faulted else f"{topology_id}: no faults")
    return 0
