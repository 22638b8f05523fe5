"""`merak alcor push FILE`: a goal state (JSON, or protobuf text format) sent to an emulated host's agent as
Alcor's NCM sends it (PushGoalStatesStream, or PushNetworkResourceStates with --v1), its reply printed:
for trying a controller's messages by hand."""

from __future__ import annotations

from pathlib import Path

import grpc
from google.protobuf import json_format, text_format
from google.protobuf.message import Message
from rich.table import Table

from alcor.schema import common_pb2, goalstate_pb2, goalstateprovisioner_pb2, goalstateprovisioner_pb2_grpc
from merak.errors import enum_name
from merak.grpcclient import open_blocking_channel
from merak.v1 import common_pb2 as merak_common_pb2
from merak.v1 import topology_pb2
from merak_tools.cli.output import console, wide_console
from merak_tools.cli.topology import _only_topology, _topology_service
from merak_tools.localstack import StackSettings

MAX_FILE = 64 << 20


def read_goal_state(path: Path, *, v1: bool) -> Message:
    """The file's goal state: JSON (protobuf's JSON mapping) when it starts with `{`, else text format.
    ValueError saying what is wrong."""
    message: Message = goalstate_pb2.GoalState() if v1 else goalstate_pb2.GoalStateV2()
    if path.stat().st_size > MAX_FILE:
        raise ValueError(f"{path}: larger than {MAX_FILE >> 20} MiB")
    text = path.read_text()
    try:
        if text.lstrip().startswith("{"):
            json_format.Parse(text, message)
        else:
            text_format.Parse(text, message)
    except (json_format.ParseError, text_format.ParseError) as exc:
        raise ValueError(f"{path}: not a {type(message).__name__}: {exc}") from None
    return message


def _target(settings: StackSettings, topology_id: str, vhost: str) -> tuple[str, str]:
    """(agent endpoint, data-plane IP) of a lab's vhost, asked of the topology service."""
    with _topology_service(settings) as stub:
        topology_id = topology_id or _only_topology(stub)
        if not topology_id:
            raise LookupError("no topology picked")
        info = stub.TopologyHandler(
            topology_pb2.InternalTopologyInfo(
                operation_type=merak_common_pb2.INFO,
                config=topology_pb2.InternalTopologyConfiguration(topology_id=topology_id),
            ),
            timeout=30,
        )
    for node in info.compute_nodes:
        if node.name == vhost:
            return node.agent_endpoint, node.datapath_ip
    raise LookupError(f"no vhost {vhost!r} in topology {topology_id}")


def cmd_alcor_push(
    settings: StackSettings,
    path: Path,
    *,
    topology_id: str = "",
    vhost: str = "",
    address: str = "",
    v1: bool = False,
    as_json: bool = False,
) -> int:
    """Send the goal state in `path` to a vhost's agent (or to `address`); print the reply."""
    try:
        message = read_goal_state(path, v1=v1)
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    if not address:
        if not vhost:
            console.print("[red]error:[/red] name the host: --vhost NAME (or --address HOST:PORT)")
            return 2
        try:
            address, host_ip = _target(settings, topology_id, vhost)
        except (LookupError, grpc.RpcError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 2
        if isinstance(message, goalstate_pb2.GoalStateV2) and not message.host_resources and host_ip:
            message.host_resources[host_ip].SetInParent()  # the host it is for, as NCM keys it
    try:
        with open_blocking_channel(address) as channel:
            stub = goalstateprovisioner_pb2_grpc.GoalStateProvisionerStub(channel)
            if isinstance(message, goalstate_pb2.GoalState):
                reply = stub.PushNetworkResourceStates(message, timeout=120)
            else:
                assert isinstance(message, goalstate_pb2.GoalStateV2)
                replies = list(stub.PushGoalStatesStream(iter([message]), timeout=120))
                reply = replies[0] if replies else goalstateprovisioner_pb2.GoalStateOperationReply()
    except grpc.RpcError as exc:
        console.print(f"[red]error:[/red] {address}: {exc.code().name}: {exc.details()}")
        return 1
    if as_json:
        console.print_json(json_format.MessageToJson(reply))
    else:
        _print(reply)
    failed = any(s.operation_status != common_pb2.SUCCESS for s in reply.operation_statuses)
    return 1 if failed else 0


def _print(reply: goalstateprovisioner_pb2.GoalStateOperationReply) -> None:
    table = Table(
        title=f"{len(reply.operation_statuses)} statuses in {reply.message_total_operation_time} µs"
    )
    for column in ("resource", "id", "operation", "status", "dataplane µs", "elapsed µs"):
        table.add_column(column)
    for status in reply.operation_statuses:
        table.add_row(
            enum_name(common_pb2.ResourceType, status.resource_type),
            status.resource_id,
            enum_name(common_pb2.OperationType, status.operation_type),
            enum_name(common_pb2.OperationStatus, status.operation_status),
            str(status.dataplane_programming_time),
            str(status.state_elapse_time),
        )
    wide_console().print(table)  # ids whole, for copying
