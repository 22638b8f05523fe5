"""Builders of scenario entities for the scenario tests: Merak's teste2e configs and variations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import grpc
import pytest
import redis.asyncio as aioredis

from merak import netns
from merak.v1 import compute_pb2, scenario_pb2, scenario_pb2_grpc, topology_pb2
from services.topology.backends.local import ns_prefix
from services.topology.models import TopologySpec
from tests.stack import ServiceStack

# The async stub type exists only in the generated stubs (.pyi).
Stub: TypeAlias = "scenario_pb2_grpc.MerakScenarioServiceAsyncStub"


def topology_config(
    *,
    vhosts: int = 5,
    racks: int = 2,
    per_rack: int = 5,
    ports: int = 5,
    cidr: str = "10.200.0.0/16",
    dataplane: str = "",
) -> scenario_pb2.TopologyConfig:
    """teste2e's topology: a TREE of 5 vhosts, 2 racks of 5, 5 ports per switch, 10.200.0.0/16."""
    return scenario_pb2.TopologyConfig(
        name="Top1",
        type=topology_pb2.TREE,
        number_of_vhosts=vhosts,
        number_of_racks=racks,
        vhosts_per_rack=per_rack,
        ports_per_vswitch=ports,
        data_plane_cidr=cidr,
        images=[
            scenario_pb2.Image(id="image-1", name="ACA", registry="meraksim/merak-agent:dev"),
            scenario_pb2.Image(id="image-2", name="OVS", registry="yanmo96/ovs_only:latest"),
        ],
        dataplane=dataplane,
    )


def network_config(vpcs: int = 1, subnets: int = 1) -> scenario_pb2.NetworkConfig:
    """teste2e's network (VPC 10.1.0.0/16, subnet 10.1.0.0/16, gw 10.1.0.1, one SG), or more VPCs/subnets."""
    config = scenario_pb2.NetworkConfig(
        name="network-config-1",
        number_of_vpcs=vpcs,
        number_of_subnet_per_vpc=subnets,
        number_of_security_groups=1,
        security_groups=[
            scenario_pb2.SecurityGroup(name="sg-1", tenant_id="123456789", project_id="123456789")
        ],
    )
    for v in range(vpcs):
        vpc = config.vpcs.add(
            tenant_id="123456789",
            project_id="123456789",
            vpc_cidr=f"10.{v + 1}.0.0/16",
            number_of_subnets=subnets,
        )
        for s in range(subnets):
            if subnets == 1:
                vpc.subnet_info.add(
                    subnet_cidr=f"10.{v + 1}.0.0/16", subnet_gateway=f"10.{v + 1}.0.1", number_of_vms=50
                )
            else:
                vpc.subnet_info.add(subnet_cidr=f"10.{v + 1}.{s}.0/24", subnet_gateway=f"10.{v + 1}.{s}.1")
    return config


def compute_config(*, nodes: int = 5, vms_per_vpc: int = 50) -> scenario_pb2.ComputeConfig:
    """teste2e's compute: 5 nodes, 50 VMs per VPC, UNIFORM, SEQUENTIAL (10 VMs per vhost)."""
    return scenario_pb2.ComputeConfig(
        name="compute-config-1",
        number_of_compute_nodes=nodes,
        number_of_port_per_vm=1,
        number_of_vm_per_vpc=vms_per_vpc,
        vm_deploy_type=compute_pb2.UNIFORM,
        scheduler=compute_pb2.SEQUENTIAL,
    )


def service_config() -> scenario_pb2.ServiceConfig:
    """teste2e's services; with the native plugin only the AGENT entry travels (to topology and compute)."""
    return scenario_pb2.ServiceConfig(
        name="service-config-1",
        services=[
            scenario_pb2.Service(name="alcor-createDefaultTable", cmd="curl", where_to_run="INIT"),
            scenario_pb2.Service(name="aca-cmd", cmd="/aca", parameters=["-d"], where_to_run="AGENT"),
        ],
    )


def pingall_config() -> scenario_pb2.TestConfig:
    """teste2e's pingall test."""
    return scenario_pb2.TestConfig(
        name="test-config-1",
        tests=[
            scenario_pb2.Test(
                name="pingall", cmd="ping", when_to_run="after:VM_CREATED", where_to_run="AGENT"
            )
        ],
    )


@dataclass
class Created:
    """The ids of one scenario and its configs."""

    scenario: scenario_pb2.Scenario
    topology: scenario_pb2.TopologyConfig
    network: scenario_pb2.NetworkConfig
    compute: scenario_pb2.ComputeConfig
    service: scenario_pb2.ServiceConfig
    test: scenario_pb2.TestConfig


async def create_scenario(
    stub: Stub,
    *,
    topology: scenario_pb2.TopologyConfig | None = None,
    network: scenario_pb2.NetworkConfig | None = None,
    compute: scenario_pb2.ComputeConfig | None = None,
    test: scenario_pb2.TestConfig | None = None,
) -> Created:
    """Create the five configs and a scenario that refers to them."""
    topo = await stub.CreateTopologyConfig(topology or topology_config())
    net = await stub.CreateNetworkConfig(network or network_config())
    cmp = await stub.CreateComputeConfig(compute or compute_config())
    svc = await stub.CreateServiceConfig(service_config())
    tst = await stub.CreateTestConfig(test or pingall_config())
    scenario = await stub.CreateScenario(
        scenario_pb2.Scenario(
            name="scenario-test-1",
            project_id="123456789",
            topology_id=topo.id,
            network_config_id=net.id,
            compute_config_id=cmp.id,
            service_config_id=svc.id,
            test_config_id=tst.id,
        )
    )
    return Created(scenario, topo, net, cmp, svc, tst)


async def act(
    stub: Stub,
    scenario_id: str,
    service: scenario_pb2.ServiceName.ValueType,
    action: scenario_pb2.Action.ValueType,
) -> scenario_pb2.ScenarioActionReply:
    """One ScenarioAction call."""
    return await stub.ScenarioAction(
        scenario_pb2.ScenarioActionRequest(
            scenario_id=scenario_id, service=scenario_pb2.ServiceAction(service_name=service, action=action)
        )
    )


@dataclass
class Stack:
    """The four services of one test, wired as the local stack wires them."""

    stub: Stub
    redis: aioredis.Redis
    run_dir: Path
    services: ServiceStack


async def watch(stack: Stack, scenario_id: str) -> list[scenario_pb2.ScenarioProgress]:
    """Every progress message until nothing is in a transition (bounded, so a hang fails the test)."""
    request = scenario_pb2.WatchScenarioRequest(scenario_id=scenario_id)
    return [p async for p in stack.stub.WatchScenario(request, timeout=90)]


async def refused(call: Awaitable[object]) -> str:
    """The details of a FAILED_PRECONDITION."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    return caught.value.details() or ""


async def leftovers(stack: Stack, topology_id: str) -> dict[str, list[str]]:
    """What a deleted scenario must not leave: namespaces, agent processes, Redis keys of the services."""
    short = TopologySpec(topology_id=topology_id, name="", type=0, number_of_vhosts=1).short_id
    pgrep = await asyncio.create_subprocess_exec(
        "pgrep", "-af", str(stack.run_dir), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await pgrep.communicate()
    keys = [
        str(k)
        for prefix in ("topology", "network", "compute")
        for k in await stack.redis.keys(f"merak:{prefix}:*")
    ]
    return {
        "namespaces": netns.list_names(ns_prefix(short)),
        "agents": [line for line in out.decode().splitlines() if "services.agent" in line],
        "redis": sorted(keys),
    }
