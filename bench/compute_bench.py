"""VM creation at scale through compute: real (namespaces) and fake (KWOK-style), in one run.

Everything runs on this machine, wired as the local stack wires it: a private Redis, the Temporal
dev server, the topology service's local backend with its agents, the network service (native
IPAM), the compute service and an in-process compute worker. For each size it deploys a topology,
a network (1 VPC), then the VMs through ComputeHandler CREATE, timing CREATE → every VM DONE,
then deletes everything. The real run's rate is compared with the `ip -batch` reference
(bench/agent_bench.py) measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import grpc
import redis.asyncio as aioredis
from temporalio.testing import WorkflowEnvironment

from bench.agent_bench import run_reference
from merak import netns
from merak.grpcserver import GrpcServer
from merak.temporal import TemporalConnection, temporal_cli_path
from merak.testing import free_port
from merak.v1 import common_pb2, compute_pb2, network_pb2, network_pb2_grpc, topology_pb2
from services.compute.config import ComputeSettings
from services.compute.manager import ComputeManager
from services.compute.store import ComputeStore
from services.compute.worker import run_worker
from services.network.app import build_servicer
from services.network.config import NetworkSettings
from services.network.server import registration as network_registration
from services.topology.app import build_backends
from services.topology.backends.local import ns_prefix
from services.topology.config import TopologySettings
from services.topology.manager import TopologyManager
from services.topology.models import TopologySpec
from services.topology.store import TopologyStore

MAX_MESSAGE = 500 * 1024 * 1024


async def deploy_once(
    hosts: int, per_host: int, dataplane: str, *, redis: aioredis.Redis, env: WorkflowEnvironment, work: Path
) -> tuple[float, float, int]:
    """Seconds to create (CREATE → all DONE) and to delete `hosts` x `per_host` VMs; VMs done."""
    topology = TopologyManager(TopologyStore(redis), build_backends(TopologySettings(run_dir=work / "run")))
    network_server = GrpcServer(
        "127.0.0.1:0", [network_registration(build_servicer(redis, NetworkSettings()))]
    )
    network_port = await network_server.start()
    settings = ComputeSettings(
        network_address=f"127.0.0.1:{network_port}",
        task_queue=f"bench-{os.getpid()}-{dataplane}",
        temporal_address=env.client.service_client.config.target_host,
        temporal_namespace=env.client.namespace,
    )
    temporal = TemporalConnection(settings.temporal_address, settings.temporal_namespace)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, env.client, ComputeStore(redis), stop))
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]
    topology_id = f"bench-{dataplane}-{os.getpid()}"
    try:
        async with grpc.aio.insecure_channel(settings.network_address, options=options) as channel:
            network = network_pb2_grpc.MerakNetworkServiceStub(channel)
            compute = ComputeManager(ComputeStore(redis), temporal, network, settings)
            started = time.perf_counter()
            config = topology_pb2.InternalTopologyConfiguration(
                topology_id=topology_id,
                topology_type=topology_pb2.TREE,
                number_of_vhosts=hosts,
                vhost_per_rack=32,
                ports_per_vswitch=32,
                data_plane_cidr="10.128.0.0/12",
                dataplane=dataplane,
            )
            await topology.create(config)
            while True:
                info = await topology.info(topology_id)
                if all(n.status == common_pb2.READY for n in info.compute_nodes):
                    break
                await asyncio.sleep(0.5)
            print(f"  topology of {hosts} {dataplane} vhosts ready in {time.perf_counter() - started:.1f}s")
            net = network_pb2.InternalNetConfigConfiguration(netconfig_id=f"{topology_id}-net")
            vpc = net.network.vpcs.add(project_id="bench", tenant_id="bench", vpc_cidr="10.0.0.0/8")
            vpc.subnets.add(subnet_cidr="10.0.0.0/8", subnet_gw="10.0.0.1")
            made = await network.NetConfigHandler(
                network_pb2.InternalNetConfigInfo(operation_type=common_pb2.CREATE, config=net)
            )
            request = compute_pb2.InternalComputeConfiguration(
                compute_config_id=f"{topology_id}-vms", netconfig_id=net.netconfig_id
            )
            request.pods.extend(info.compute_nodes)
            request.vm_deploy.deploy_type = compute_pb2.UNIFORM
            deploy_vpc = request.vm_deploy.vpcs.add(
                vpc_id=made.vpcs[0].vpc_id, project_id="bench", tenant_id="bench"
            )
            deploy_vpc.subnets.add(subnet_id=made.vpcs[0].subnets[0].subnet_id, number_vms=per_host)
            started = time.perf_counter()
            await compute.create(request)
            async for progress in compute.watch(request.compute_config_id, interval=0.5):
                done = progress.done
            create_seconds = time.perf_counter() - started
            if progress.error:
                print(f"  {progress.error} VMs failed: {list(progress.errors)[:3]}")
            started = time.perf_counter()
            await compute.delete(request.compute_config_id)
            async for _ in compute.watch(request.compute_config_id, interval=0.5):
                pass
            delete_seconds = time.perf_counter() - started
            await network.NetConfigHandler(
                network_pb2.InternalNetConfigInfo(operation_type=common_pb2.DELETE, config=net)
            )
        return create_seconds, delete_seconds, done
    finally:
        stop.set()
        await worker
        await temporal.close()
        if await topology.store.get(topology_id) is not None:
            await topology.delete(topology_id)
        await topology.close()
        await topology.backends.close()
        await network_server.stop(0)
        leaked = netns.list_names(ns_prefix(TopologySpec(topology_id, "", 0, 1).short_id))
        if leaked:
            print(f"  LEAK: {len(leaked)} namespaces, e.g. {leaked[:3]}")


async def run(args: argparse.Namespace) -> None:
    """Both sizes, then the reference."""
    work = Path(tempfile.mkdtemp(prefix="mkc", dir="/tmp"))
    port = free_port()
    redis_proc = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(work),
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    env = await WorkflowEnvironment.start_local(
        namespace="merak",
        dev_server_existing_path=str(temporal_cli_path()),
        ui=False,
        dev_server_log_level="error",
    )
    redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", decode_responses=True)
    try:
        while True:
            try:
                await redis.ping()
                break
            except OSError:
                await asyncio.sleep(0.05)
        results = {}
        for dataplane, hosts, per_host in (
            ("real", args.real_hosts, args.vms),
            ("fake", args.fake_hosts, args.vms),
        ):
            if not hosts:
                continue
            print(f"{dataplane}: {hosts} vhosts x {per_host} VMs")
            create, delete, done = await deploy_once(
                hosts, per_host, dataplane, redis=redis, env=env, work=work
            )
            results[dataplane] = (hosts * per_host, create, delete, done)
            print(f"  {done} VMs DONE in {create:.1f}s = {done / create:.0f} VMs/s; deleted in {delete:.1f}s")
        reference_rate = 0.0
        if "real" in results:
            count = 1000
            reference = run_reference(count, work, f"mkc{os.getpid()}")
            reference_rate = count / reference
            print(f"ip -batch reference: {count} VMs in {reference:.2f}s = {reference_rate:.0f} VMs/s")
        for dataplane, (total, create, _delete, done) in results.items():
            line = f"{dataplane}: {done}/{total} VMs, {done / create:.0f} VMs/s through compute"
            if dataplane == "real" and reference_rate:
                line += f", ratio to ip -batch {done / create / reference_rate:.2f}"
            print(line)
    finally:
        await redis.aclose()
        await env.shutdown()
        redis_proc.terminate()
        await redis_proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the compute benchmark."""
    parser = argparse.ArgumentParser(prog="python -m bench compute")
    parser.add_argument("--real-hosts", type=int, default=100)
    parser.add_argument("--fake-hosts", type=int, default=10_000)
    parser.add_argument("--vms", type=int, default=100, help="VMs per vhost")
    args = parser.parse_args(argv)
    asyncio.run(run(args))
    return 0
