"""Merak's scenario manager's gRPC calls, replayed as it sent them (JSON with Merak's field names).

Topology CREATE, INFO until READY; network CREATE with `computes` = the topology's compute nodes;
compute CREATE with `pods` = those nodes, `vm_deploy.vpcs` = the network reply's VPCs and no
`netconfig_id` (a field Merak does not have); INFO until "<n> out of <n> done!"; DELETE compute,
network, topology. Nothing may be left.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from merak import netns
from merak.naming import topology_short_id
from merak.v1 import (
    common_pb2,
    compute_pb2,
    compute_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    topology_pb2,
    topology_pb2_grpc,
)
from tests.stack import ServiceStack
from tests.support import assert_eventually, unique_name

pytestmark = [pytest.mark.root, pytest.mark.slow]


def merak(message_type: type[Any], text: str) -> Any:
    """A request written the way Merak's scenario manager built it."""
    return json_format.Parse(text, message_type())


@pytest.fixture
async def channels(temporal_services: ServiceStack) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    services = temporal_services
    await services.topology()
    await services.network()
    await services.compute()
    await services.worker()
    opened = {
        name: grpc.aio.insecure_channel(services.addresses[name])
        for name in ("topology", "network", "compute")
    }
    try:
        yield opened
    finally:
        for channel in opened.values():
            await channel.close(None)


async def test_merak_scenario_manager_sequence(channels: dict[str, grpc.aio.Channel]) -> None:
    topology = topology_pb2_grpc.MerakTopologyServiceStub(channels["topology"])
    network = network_pb2_grpc.MerakNetworkServiceStub(channels["network"])
    compute = compute_pb2_grpc.MerakComputeServiceStub(channels["compute"])
    topology_id, netconfig_id, compute_id = unique_name("mk-"), unique_name("nc-"), unique_name("cc-")

    await topology.TopologyHandler(merak(topology_pb2.InternalTopologyInfo, json.dumps({
        "operation_type": "CREATE",
        "config": {
            "format_version": 1, "revision_number": 1, "request_id": topology_id, "topology_id": topology_id,
            "message_type": "FULL", "topology_type": "TREE", "number_of_vhosts": 3, "number_of_racks": 1,
            "vhost_per_rack": 3, "ports_per_vswitch": 3, "data_plane_cidr": "10.230.0.0/24",
        },
    })))  # fmt: skip
    info_request = merak(topology_pb2.InternalTopologyInfo, json.dumps(
        {"operation_type": "INFO", "config": {"topology_id": topology_id}}
    ))  # fmt: skip

    async def ready() -> topology_pb2.ReturnTopologyMessage | None:
        info = await topology.TopologyHandler(info_request)
        nodes = info.compute_nodes
        return info if nodes and all(n.status == common_pb2.READY for n in nodes) else None

    info: topology_pb2.ReturnTopologyMessage = await assert_eventually(ready, timeout=60, message="topology")
    nodes = [json_format.MessageToDict(n, preserving_proto_field_name=True) for n in info.compute_nodes]

    created = await network.NetConfigHandler(merak(network_pb2.InternalNetConfigInfo, json.dumps({
        "operation_type": "CREATE",
        "config": {
            "format_version": 1, "revision_number": 1, "request_id": netconfig_id,
            "netconfig_id": netconfig_id, "message_type": "FULL", "computes": nodes,
            "network": {
                "number_of_vpcs": 1, "number_of_subnet_per_vpc": 1, "number_of_security_groups": 1,
                "vpcs": [{
                    "tenant_id": "123456789", "project_id": "123456789", "vpc_cidr": "10.1.0.0/16",
                    "subnets": [{"subnet_cidr": "10.1.0.0/16", "subnet_gw": "10.1.0.1", "number_vms": 9}],
                }],
                "security_groups": [{"name": "sg-1", "tenant_id": "123456789", "project_id": "123456789"}],
            },
        },
    })))  # fmt: skip
    assert created.return_code == common_pb2.OK

    # Merak copies the network reply's VPCs into the compute request and names no network config.
    vpcs = [json_format.MessageToDict(v, preserving_proto_field_name=True) for v in created.vpcs]
    for vpc in vpcs:
        for subnet in vpc["subnets"]:
            subnet["number_vms"] = 3
    request = merak(compute_pb2.InternalComputeConfigInfo, json.dumps({
        "operation_type": "CREATE",
        "config": {
            "format_version": 1, "revision_number": 1, "request_id": compute_id,
            "compute_config_id": compute_id, "message_type": "FULL", "pods": nodes,
            "vm_deploy": {"operation_type": "CREATE", "deploy_type": "UNIFORM", "vpcs": vpcs,
                          "secgroups": list(created.security_group_ids), "scheduler": "SEQUENTIAL"},
        },
    }))  # fmt: skip
    assert not request.config.netconfig_id
    await compute.ComputeHandler(request)
    compute_info = merak(compute_pb2.InternalComputeConfigInfo, json.dumps(
        {"operation_type": "INFO", "config": {"compute_config_id": compute_id}}
    ))  # fmt: skip

    async def done() -> str | None:
        reply = await compute.ComputeHandler(compute_info)
        words = reply.vms[0].id.split(" ") if reply.vms else []
        return reply.vms[0].id if len(words) > 3 and words[0] == words[3] != "0" else None

    progress: str = await assert_eventually(done, timeout=120, message="compute")
    assert progress == "9 out of 9 done!"

    # Delete in Merak's order: compute, network, topology.
    await compute.ComputeHandler(merak(compute_pb2.InternalComputeConfigInfo, json.dumps(
        {"operation_type": "DELETE", "config": {"compute_config_id": compute_id}}
    )))  # fmt: skip

    async def compute_gone() -> str | None:
        try:
            await compute.ComputeHandler(compute_info)
        except grpc.aio.AioRpcError as exc:
            return "gone" if exc.code() == grpc.StatusCode.NOT_FOUND else None
        return None

    gone: str = await assert_eventually(compute_gone, timeout=120, message="compute delete")
    assert gone == "gone"
    await network.NetConfigHandler(merak(network_pb2.InternalNetConfigInfo, json.dumps(
        {"operation_type": "DELETE", "config": {"netconfig_id": netconfig_id}}
    )))  # fmt: skip
    await topology.TopologyHandler(merak(topology_pb2.InternalTopologyInfo, json.dumps(
        {"operation_type": "DELETE", "config": {"topology_id": topology_id}}
    )))  # fmt: skip
    assert netns.list_names(f"mk-{topology_short_id(topology_id)}-") == []
