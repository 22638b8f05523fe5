"""Compute end to end: real topology (namespaces, agents), network IPAM, Temporal dev server, Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from merak import netns
from merak.capacity import MachineRoom, real_vms_bytes
from merak.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    common_pb2,
    compute_pb2,
    compute_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    topology_pb2,
)
from services.compute.config import ComputeSettings
from services.compute.store import ComputeStore
from services.topology.backends.local import ns_prefix
from services.topology.manager import TopologyManager
from tests.stack import ServiceStack
from tests.support import assert_eventually, unique_name

pytestmark = [pytest.mark.root, pytest.mark.slow]


@dataclass
class Cloud:
    """The services of one test, wired as the stack wires them."""

    compute: compute_pb2_grpc.MerakComputeServiceAsyncStub
    network: network_pb2_grpc.MerakNetworkServiceAsyncStub
    topology: TopologyManager
    redis: aioredis.Redis
    settings: ComputeSettings
    temporal_address: str
    redis_url: str
    prefix: str = ""
    nodes: list[common_pb2.InternalComputeInfo] | None = None


async def _topology(manager: TopologyManager, vhosts: int) -> list[common_pb2.InternalComputeInfo]:
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=unique_name("cmp-"),
        topology_type=topology_pb2.TREE,
        number_of_vhosts=vhosts,
        vhost_per_rack=5,
        ports_per_vswitch=5,
        data_plane_cidr="10.220.0.0/24",
    )
    await manager.create(config)

    async def ready() -> list[common_pb2.InternalComputeInfo] | None:
        info = await manager.info(config.topology_id)
        return (
            list(info.compute_nodes)
            if all(n.status == common_pb2.READY for n in info.compute_nodes)
            else None
        )

    nodes: list[common_pb2.InternalComputeInfo] = await assert_eventually(
        ready, timeout=60, message="topology"
    )
    return nodes


@pytest.fixture
async def cloud(temporal_services: ServiceStack, redis_client: aioredis.Redis) -> AsyncIterator[Cloud]:
    services = temporal_services
    topology = await services.topology()
    await services.network()
    await services.compute()
    async with (
        grpc.aio.insecure_channel(services.addresses["network"]) as network_channel,
        grpc.aio.insecure_channel(services.addresses["compute"]) as channel,
    ):
        settings = services.compute_settings()
        yield Cloud(
            compute_pb2_grpc.MerakComputeServiceStub(channel),
            network_pb2_grpc.MerakNetworkServiceStub(network_channel),
            topology,
            redis_client,
            settings,
            settings.temporal_address,
            services.redis_url,
        )


@pytest.fixture
async def worker(cloud: Cloud, temporal_services: ServiceStack) -> None:
    """A compute worker inside the test process."""
    await temporal_services.worker()


async def _network(
    cloud: Cloud, netconfig_id: str, block_prefix: int = 0
) -> network_pb2.ReturnNetworkMessage:
    """Merak's teste2e network config: 1 VPC 10.1.0.0/16, 1 subnet 10.1.0.0/16 gw 10.1.0.1, 1 SG (and
    per-host address blocks of `block_prefix`, when given)."""
    config = network_pb2.InternalNetConfigConfiguration(netconfig_id=netconfig_id, block_prefix=block_prefix)
    vpc = config.network.vpcs.add(tenant_id="123456789", project_id="123456789", vpc_cidr="10.1.0.0/16")
    vpc.subnets.add(subnet_cidr="10.1.0.0/16", subnet_gw="10.1.0.1", number_vms=50)
    config.network.security_groups.add(name="sg-1", tenant_id="123456789", project_id="123456789")
    return await cloud.network.NetConfigHandler(
        network_pb2.InternalNetConfigInfo(operation_type=common_pb2.CREATE, config=config)
    )


def _compute(
    config_id: str,
    netconfig_id: str,
    nodes: list[common_pb2.InternalComputeInfo],
    network: network_pb2.ReturnNetworkMessage,
    per_host: int,
) -> compute_pb2.InternalComputeConfigInfo:
    config = compute_pb2.InternalComputeConfiguration(compute_config_id=config_id, netconfig_id=netconfig_id)
    config.pods.extend(nodes)
    config.vm_deploy.deploy_type = compute_pb2.UNIFORM
    config.vm_deploy.secgroups.extend(network.security_group_ids)
    for vpc in network.vpcs:
        added = config.vm_deploy.vpcs.add(
            vpc_id=vpc.vpc_id, project_id=vpc.project_id, tenant_id=vpc.tenant_id
        )
        for subnet in vpc.subnets:
            added.subnets.add(subnet_id=subnet.subnet_id, number_vms=per_host)
    return compute_pb2.InternalComputeConfigInfo(operation_type=common_pb2.CREATE, config=config)


async def _watch(cloud: Cloud, config_id: str) -> list[compute_pb2.ComputeProgress]:
    seen = []
    async for progress in cloud.compute.WatchProgress(
        compute_pb2.WatchProgressRequest(compute_config_id=config_id)
    ):
        seen.append(progress)
    return seen


async def _delete_and_check_gone(
    cloud: Cloud, config_id: str, nodes: list[common_pb2.InternalComputeInfo]
) -> None:
    """DELETE the config; no VM is left in an agent or as a namespace, no compute key in Redis."""
    await cloud.compute.ComputeHandler(
        compute_pb2.InternalComputeConfigInfo(
            operation_type=common_pb2.DELETE,
            config=compute_pb2.InternalComputeConfiguration(compute_config_id=config_id),
        )
    )
    await _watch(cloud, config_id)
    assert all(not vms for vms in (await _vms_in_agents(nodes)).values())
    short = nodes[0].agent_endpoint.split("/")[-2]
    assert [n for n in netns.list_names(ns_prefix(short)) if n[len(ns_prefix(short))].isdigit()] == []
    assert await cloud.redis.keys("merak:compute:*") == []


async def _vms_in_agents(nodes: list[common_pb2.InternalComputeInfo]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for node in nodes:
        async with grpc.aio.insecure_channel(node.agent_endpoint) as channel:
            listed = await agent_pb2_grpc.MerakAgentServiceStub(channel).ListVms(
                agent_pb2.ListVmsRequest(vhost=node.name)
            )
        found[node.name] = {vm.name: vm.ip for vm in listed.vms}
    return found


async def _until_done_between(cloud: Cloud, config_id: str, low: int, high: int) -> None:
    """Wait until the deployment is under way: low <= VMs done < high (to kill something mid-way)."""

    async def under_way() -> bool:
        info = await cloud.compute.ComputeHandler(
            compute_pb2.InternalComputeConfigInfo(
                operation_type=common_pb2.INFO,
                config=compute_pb2.InternalComputeConfiguration(compute_config_id=config_id),
            )
        )
        return low <= info.progress.done < high

    reached: bool = await assert_eventually(
        under_way, timeout=120, interval=0.02, message="deployment under way"
    )
    assert reached


async def test_teste2e_compute_deploys_pings_and_deletes(cloud: Cloud, worker: None) -> None:
    nodes = await _topology(cloud.topology, 5)
    netconfig_id, config_id = unique_name("net-"), unique_name("cmp-")
    network = await _network(cloud, netconfig_id)
    reply = await cloud.compute.ComputeHandler(_compute(config_id, netconfig_id, nodes, network, per_host=10))
    assert reply.vms[0].id == "Started deployment for 50 VMs"

    seen = await _watch(cloud, config_id)
    dones = [p.done for p in seen]
    assert dones == sorted(dones), "progress must be monotone"
    assert seen[-1].finished and seen[-1].done == 50 and seen[-1].error == 0, seen[-1]
    info = await cloud.compute.ComputeHandler(
        compute_pb2.InternalComputeConfigInfo(
            operation_type=common_pb2.INFO,
            config=compute_pb2.InternalComputeConfiguration(compute_config_id=config_id),
        )
    )
    assert info.vms[0].id == "50 out of 50 done!"

    in_agents = await _vms_in_agents(nodes)
    assert {h: len(v) for h, v in in_agents.items()} == {n.name: 10 for n in nodes}
    ips = [ip for vms in in_agents.values() for ip in vms.values()]
    assert len(set(ips)) == 50 and all(ip.startswith("10.1.") for ip in ips)

    # Across hosts, through the overlay compute programmed.
    await _pings_pass(nodes[0], list(in_agents[nodes[-1].name].values()))

    # Deploying twice creates nothing new.
    again = await cloud.compute.ComputeHandler(_compute(config_id, netconfig_id, nodes, network, per_host=10))
    assert again.progress.done == 50
    assert await _vms_in_agents(nodes) == in_agents

    await _delete_and_check_gone(cloud, config_id, nodes)


async def test_vms_of_a_network_with_host_blocks_are_routed_between_hosts(cloud: Cloud, worker: None) -> None:
    # The network config gives each host /28 blocks of its subnets: compute keeps each VM's route and
    # programs the routed overlay (a set of entries per remote host, not per remote VM).
    nodes = await _topology(cloud.topology, 3)
    netconfig_id, config_id = unique_name("net-"), unique_name("cmp-")
    network = await _network(cloud, netconfig_id, block_prefix=28)
    assert network.block_prefix == 28  # and compute's capacity check counts a routed overlay
    reply = await cloud.compute.ComputeHandler(_compute(config_id, netconfig_id, nodes, network, per_host=6))
    assert reply.vms[0].id == "Started deployment for 18 VMs"
    seen = await _watch(cloud, config_id)
    assert seen[-1].finished and seen[-1].done == 18 and seen[-1].error == 0, seen[-1]
    store = ComputeStore(cloud.redis)
    routes = {n.name: {r.route for r in await store.vms.records(config_id, n.name)} for n in nodes}
    assert all(len(r) == 1 and next(iter(r)).endswith("/28") for r in routes.values()), routes
    assert len({next(iter(r)) for r in routes.values()}) == 3  # a block each
    in_agents = await _vms_in_agents(nodes)
    for source, destination in ((nodes[0], nodes[1]), (nodes[2], nodes[0])):
        await _pings_pass(source, list(in_agents[destination.name].values()))
    # Each vhost's VPC namespace holds a route per remote block (through the remote vhost's IPv6
    # link-local next hop), and no neighbour entry per remote VM.
    short = nodes[0].agent_endpoint.split("/")[-2]
    vpc_namespaces = [n for n in netns.list_names(ns_prefix(short)) if "-vpc" in n]
    assert len(vpc_namespaces) == 3, vpc_namespaces
    for ns in vpc_namespaces:
        static = _ip(ns, "-4", "route", "show", "proto", "static")
        assert len(static) == 2 and all("via inet6 fe80::" in r for r in static), static
        assert _ip(ns, "-4", "neigh", "show", "nud", "permanent") == []
    await _delete_and_check_gone(cloud, config_id, nodes)


async def _pings_pass(source: common_pb2.InternalComputeInfo, destinations: list[str]) -> None:
    """VM v0-0-0 of `source` reaches every destination."""
    async with grpc.aio.insecure_channel(source.agent_endpoint) as channel:
        pinged = await agent_pb2_grpc.MerakAgentServiceStub(channel).Ping(
            agent_pb2.PingRequest(vhost=source.name, vm="v0-0-0", destinations=destinations, retry_seconds=5)
        )
    assert pinged.failed == 0, [(r.destination, r.error) for r in pinged.results if not r.ok]


def _ip(namespace: str, *args: str) -> list[str]:
    """The lines `ip -n <namespace> <args>` prints."""
    done = subprocess.run(["ip", "-n", namespace, *args], capture_output=True, text=True, check=True)
    return [line for line in done.stdout.splitlines() if line.strip()]


def _calls_served(services: ServiceStack, name: str) -> int:
    """The gRPC calls a service of the stack has answered so far (every method, every code)."""
    return sum(
        int(sample.value)
        for metric in services.registry(name).collect()
        if metric.name == "merak_grpc_server_handled"
        for sample in metric.samples
        if sample.name == "merak_grpc_server_handled_total"
    )


async def test_a_repeated_create_or_update_asks_no_service_before_it_answers(
    cloud: Cloud, worker: None, temporal_services: ServiceStack
) -> None:
    nodes = await _topology(cloud.topology, 2)
    netconfig_id, config_id = unique_name("net-"), unique_name("cmp-")
    network = await _network(cloud, netconfig_id)
    request = _compute(config_id, netconfig_id, nodes, network, per_host=2)
    first = await cloud.compute.ComputeHandler(request)
    assert first.vms[0].id == "Started deployment for 4 VMs"
    assert (await _watch(cloud, config_id))[-1].done == 4  # the worker has stopped calling the network
    served = {name: _calls_served(temporal_services, name) for name in ("network", "topology")}
    assert all(served.values()), served  # the first CREATE asked both

    # The same request again, as a CREATE and as an UPDATE: the earlier result, and not one call to the
    # network service (the network config, the subnets) or the topology service (the agents).
    again = await cloud.compute.ComputeHandler(request)
    request.operation_type = common_pb2.UPDATE
    updated = await cloud.compute.ComputeHandler(request)
    assert {name: _calls_served(temporal_services, name) for name in served} == served
    for reply in (again, updated):
        assert (reply.vms[0].id, reply.progress.done, reply.progress.operation) == (
            "4 out of 4 done!",
            4,
            "CREATE",
        )

    # The same deployment asked in other words (the network config found from the VPCs): it is asked
    # of the network service, then known as the same, and nothing new is made.
    request.operation_type = common_pb2.CREATE
    request.config.netconfig_id = ""
    reworded = await cloud.compute.ComputeHandler(request)
    assert _calls_served(temporal_services, "network") > served["network"]
    assert (reworded.vms[0].id, reworded.progress.operation) == ("4 out of 4 done!", "CREATE")

    await _delete_and_check_gone(cloud, config_id, nodes)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ("zero", "config.vm_deploy.vpcs"),
        ("unknown_vpc", "config.vm_deploy.vpcs[0].vpc_id"),
        ("unknown_subnet", "config.vm_deploy.vpcs[0].subnets[0].subnet_id"),
        ("too_many", "config.vm_deploy.vpcs[0].subnets[0]"),
        ("assign", "config.vm_deploy.deploy_method"),
        # Nothing else wrong: compute would connect wherever a request points it.
        ("endpoint", "config.pods[0].agent_endpoint"),
    ],
)
async def test_bad_input_starts_nothing(cloud: Cloud, change: str, field: str) -> None:
    nodes = [
        common_pb2.InternalComputeInfo(name=f"vhost-{i}", agent_endpoint=f"unix:///nowhere/{i}")
        for i in range(3)
    ]
    netconfig_id = unique_name("net-")
    network = await _network(cloud, netconfig_id)
    request = _compute(unique_name("cmp-"), netconfig_id, nodes, network, per_host=10)
    subnet = request.config.vm_deploy.vpcs[0].subnets[0]
    if change == "zero":
        subnet.number_vms = 0
    elif change == "unknown_vpc":
        request.config.vm_deploy.vpcs[0].vpc_id = "vpc-404"
    elif change == "unknown_subnet":
        subnet.subnet_id = "subnet-404"
    elif change == "too_many":
        subnet.number_vms = 30_000  # 90,000 VMs in a /16 (fake vhosts: a real one holds 1,022 per VPC)
        for pod in request.config.pods:
            pod.dataplane = "fake"
    elif change == "assign":
        request.config.vm_deploy.deploy_type = compute_pb2.ASSIGN
        request.config.vm_deploy.deploy_method.add(num_of_vm=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cloud.compute.ComputeHandler(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert (caught.value.details() or "").startswith(field), caught.value.details()
    assert await cloud.redis.keys("merak:compute:*") == []


async def test_real_vms_this_machine_cannot_hold_are_refused_before_anything_is_made(cloud: Cloud) -> None:
    # 600 real vhosts (unix-socket agents: this machine) x 100 VMs of one VPC: each VM costs its kernel
    # objects plus its overlay entries on 599 other vhosts, ~50 GB in all.
    room = MachineRoom.now()
    hosts, per_host = 600, 100
    if room is None or real_vms_bytes(hosts * per_host, hosts) <= room.memory_bytes:
        pytest.skip("this machine could hold 60,000 real VMs on 600 vhosts")
    nodes = [
        common_pb2.InternalComputeInfo(name=f"vhost-{i}", agent_endpoint=f"unix:///nowhere/{i}")
        for i in range(hosts)
    ]
    netconfig_id = unique_name("net-")
    network = await _network(cloud, netconfig_id)
    request = _compute(unique_name("cmp-"), netconfig_id, nodes, network, per_host=per_host)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cloud.compute.ComputeHandler(request)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    assert re.search(r"60,000 real VMs on this machine .* about [0-9,]+ fit", caught.value.details() or "")
    assert await cloud.redis.keys("merak:compute:*") == []


@pytest.fixture
def worker_process(cloud: Cloud) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Compute worker processes started by the test (killed at the end whatever happens)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _start_worker(cloud: Cloud) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MERAK_REDIS_URL": cloud.redis_url,
        "MERAK_TEMPORAL_ADDRESS": cloud.temporal_address,
        "MERAK_TEMPORAL_NAMESPACE": cloud.settings.temporal_namespace,
        "MERAK_TASK_QUEUE": cloud.settings.task_queue,
        "MERAK_NETWORK_ADDRESS": cloud.settings.network_address,
        "MERAK_BATCH_SIZE": str(cloud.settings.batch_size),
        "MERAK_WORKER_METRICS_PORT": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services.compute.worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_killing_the_worker_mid_deployment_loses_and_duplicates_nothing(
    cloud: Cloud, worker_process: list[subprocess.Popen[bytes]]
) -> None:
    nodes = await _topology(cloud.topology, 5)
    netconfig_id, config_id = unique_name("net-"), unique_name("cmp-")
    network = await _network(cloud, netconfig_id)
    worker_process.append(_start_worker(cloud))
    await cloud.compute.ComputeHandler(_compute(config_id, netconfig_id, nodes, network, per_host=100))

    await _until_done_between(cloud, config_id, 40, 400)
    worker_process[0].send_signal(signal.SIGKILL)
    worker_process[0].wait()
    started = time.monotonic()
    worker_process.append(_start_worker(cloud))
    seen = await _watch(cloud, config_id)
    assert seen[-1].done == 500 and seen[-1].error == 0, (seen[-1], time.monotonic() - started)
    in_agents = await _vms_in_agents(nodes)
    assert sum(len(v) for v in in_agents.values()) == 500
    assert len({ip for vms in in_agents.values() for ip in vms.values()}) == 500


async def test_killing_an_agent_mid_deployment_loses_duplicates_and_leaks_nothing(
    cloud: Cloud, worker: None
) -> None:
    # The topology service restarts the agent; compute's retried batch finds the VMs the dead agent
    # made (they are namespaces) and makes the rest: exactly the VMs asked for, and DELETE removes all.
    nodes = await _topology(cloud.topology, 4)
    netconfig_id, config_id = unique_name("net-"), unique_name("cmp-")
    network = await _network(cloud, netconfig_id)
    await cloud.compute.ComputeHandler(_compute(config_id, netconfig_id, nodes, network, per_host=60))
    victim = nodes[0]
    pid_file = Path(victim.agent_endpoint.removeprefix("unix://")).with_suffix(".pid")

    await _until_done_between(cloud, config_id, 10, 240)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    seen = await _watch(cloud, config_id)
    assert (seen[-1].done, seen[-1].error) == (240, 0), seen[-1]
    in_agents = await _vms_in_agents(nodes)
    assert {name: len(vms) for name, vms in in_agents.items()} == {n.name: 60 for n in nodes}
    assert len({ip for vms in in_agents.values() for ip in vms.values()}) == 240

    await _delete_and_check_gone(cloud, config_id, nodes)
