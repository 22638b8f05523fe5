"""Compute's Temporal activities: VM batches through the network service and the agents.

Every activity is idempotent (the agents' and the IPAM's operations are), so a retried activity
never duplicates or loses a VM. Transient failures (a dependency unreachable) raise and are retried
by Temporal; permanent ones (bad input, no addresses left) raise non-retryable errors, and the
workflow records them on the batch's VMs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence

import grpc
from prometheus_client import Counter, Histogram
from temporalio import activity
from temporalio.exceptions import ApplicationError

from merak.errors import is_permanent
from merak.grpcclient import ChannelPool
from merak.logs import get_logger
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, network_pb2, network_pb2_grpc
from services.compute.contracts import (
    BatchFailure,
    BatchInput,
    BatchOutcome,
    FinishInput,
    HostBatches,
    ShardPlan,
    ShardRef,
)
from services.compute.store import ComputeStore, Meta, VmRecord

log = get_logger(__name__)

RETRIES = Counter("merak_compute_activity_retries_total", "Activity attempts after the first.", ["activity"])
VM_CREATE_SECONDS = Histogram(
    "merak_compute_vm_create_seconds",
    "Time from the start of a deployment until a VM is DONE.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)


HEARTBEAT_SECONDS = 5.0


@contextlib.asynccontextmanager
async def heartbeating(interval: float = HEARTBEAT_SECONDS) -> AsyncIterator[None]:
    """Heartbeat while the block runs, so a dead worker's activity is retried within the heartbeat timeout."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _raise(exc: grpc.aio.AioRpcError, what: str) -> None:
    """A permanent gRPC error becomes a non-retryable failure; others are retried by Temporal."""
    message = f"{what}: {exc.code().name}: {exc.details()}"
    raise ApplicationError(message, type=exc.code().name, non_retryable=is_permanent(exc.code())) from exc


class ComputeActivities:
    """The activities, with their dependencies: the inventory, the network service, agent channels."""

    def __init__(
        self,
        store: ComputeStore,
        network: network_pb2_grpc.MerakNetworkServiceAsyncStub,
        *,
        agent_timeout: float = 600.0,
    ) -> None:
        self.store = store
        self.network = network
        self.agent_timeout = agent_timeout
        self._agents = ChannelPool()

    def _agent(self, endpoint: str) -> agent_pb2_grpc.MerakAgentServiceAsyncStub:
        return agent_pb2_grpc.MerakAgentServiceStub(self._agents.channel(endpoint))

    async def close(self) -> None:
        """Close the agent channels."""
        await self._agents.close()

    @staticmethod
    def _count_retry() -> None:
        info = activity.info()
        if info.attempt > 1:
            RETRIES.labels(info.activity_type).inc()

    @activity.defn(name="compute.shard_plan")
    async def shard_plan(self, ref: ShardRef) -> ShardPlan:
        """The hosts of a shard and their batch counts."""
        meta = await self.store.meta(ref.config_id)
        if meta is None:
            raise ApplicationError(f"compute config {ref.config_id} is gone", non_retryable=True)
        hosts = await self.store.hosts(ref.config_id)
        names = await self.store.shard_hosts(ref.config_id, ref.shard)
        return ShardPlan(
            [HostBatches(n, math.ceil(hosts[n]["count"] / meta.batch_size), meta.batch_size) for n in names]
        )

    async def _batch(self, batch: BatchInput) -> tuple[list[VmRecord], dict[str, object], Meta]:
        meta = await self.store.meta(batch.config_id)
        if meta is None:
            raise ApplicationError(f"compute config {batch.config_id} is gone", non_retryable=True)
        host = (await self.store.hosts(batch.config_id))[batch.host]
        names = await self.store.batch_names(batch.config_id, batch.host, batch.batch, meta.batch_size)
        records = await self.store.vms(batch.config_id, batch.host, names)
        return records, host, meta

    @activity.defn(name="compute.create_batch")
    async def create_batch(self, batch: BatchInput) -> BatchOutcome:
        """Create one batch of VMs of one host (addresses first, then the agent's batch create)."""
        self._count_retry()
        async with heartbeating():
            return await self._create_batch(batch)

    async def _create_batch(self, batch: BatchInput) -> BatchOutcome:
        records, host, meta = await self._batch(batch)
        plugin, netconfig_id = meta.plugin, meta.netconfig_id
        todo = [r for r in records if r.status != common_pb2.DONE]
        if todo:
            agent = self._agent(str(host["endpoint"]))
            if plugin == "alcor":
                await self._create_alcor(agent, batch.host, todo)
            else:
                await self._create_native(agent, batch.host, netconfig_id, todo)
            await self.store.put_vms(batch.config_id, batch.host, todo)
            elapsed = time.time() - meta.started_at
            for record in todo:
                if record.status == common_pb2.DONE:
                    VM_CREATE_SECONDS.observe(elapsed)
        done = sum(r.status == common_pb2.DONE for r in records)
        log.info(
            "batch_created",
            config_id=batch.config_id,
            host=batch.host,
            batch=batch.batch,
            vms=len(records),
            done=done,
            failed=len(records) - done,
        )
        return BatchOutcome(done=done, failed=len(records) - done)

    async def _create_native(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        netconfig_id: str,
        todo: list[VmRecord],
    ) -> None:
        request = network_pb2.AllocatePortsRequest(
            netconfig_id=netconfig_id,
            ports=[network_pb2.PortRequest(vm_id=r.id, vpc_id=r.vpc, subnet_id=r.subnet) for r in todo],
        )
        try:
            allocated = await self.network.AllocatePorts(request, timeout=120)
        except grpc.aio.AioRpcError as exc:
            _raise(exc, "network AllocatePorts")
        subnets: dict[int, dict[str, str]] = defaultdict(dict)
        vpcs: dict[int, tuple[str, str]] = {}
        for record, port in zip(todo, allocated.ports, strict=True):
            record.ip, record.mac, record.prefix, record.vni = port.ip, port.mac, port.prefix_len, port.vni
            record.gmac, record.gw, record.cidr = port.gateway_mac, port.gateway, port.cidr
            subnets[port.vni][port.cidr] = port.gateway
            vpcs[port.vni] = (port.vpc_id, port.gateway_mac)
        create = agent_pb2.CreateVmsRequest(
            vhost=host,
            vpcs=[
                agent_pb2.VpcSpec(
                    vpc_id=vpc_id,
                    vni=vni,
                    gateway_mac=gmac,
                    subnets=[
                        agent_pb2.SubnetGateway(cidr=c, gateway=g) for c, g in sorted(subnets[vni].items())
                    ],
                )
                for vni, (vpc_id, gmac) in sorted(vpcs.items())
            ],
            vms=[
                agent_pb2.VmSpec(
                    name=r.name,
                    vpc_id=r.vpc,
                    vni=r.vni,
                    ip=r.ip,
                    prefix_len=r.prefix,
                    mac=r.mac,
                    gateway=r.gw,
                    id=r.id,
                    subnet_id=r.subnet,
                )
                for r in todo
            ],
        )
        try:
            reply = await agent.CreateVms(create, timeout=self.agent_timeout)
        except grpc.aio.AioRpcError as exc:
            _raise(exc, f"agent CreateVms on {host}")
        results = {r.name: r for r in reply.results}
        for record in todo:
            result = results.get(record.name)
            record.status = common_pb2.DONE if result is not None and result.ok else common_pb2.ERROR
            record.error = (
                "" if result is not None and result.ok else (result.error if result else "no result")
            )

    async def _create_alcor(
        self, agent: agent_pb2_grpc.MerakAgentServiceAsyncStub, host: str, todo: list[VmRecord]
    ) -> None:
        """Merak's flow: PRECREATE (Alcor port: IP, MAC, port id), then CREATE (bind + build)."""

        def port(record: VmRecord, op: common_pb2.OperationType.ValueType) -> agent_pb2.InternalPortConfig:
            return agent_pb2.InternalPortConfig(
                operation_type=op,
                id=record.id,
                name=record.name,
                vpcid=record.vpc,
                tenantid=record.tenant,
                projectid=record.project,
                subnetid=record.subnet,
                gw=record.gw,
                sg=record.sgs[0] if record.sgs else "",
                cidr=record.cidr,
                hostname=host,
                remoteid=record.remote,
                deviceid=record.device,
                ip=record.ip,
                mac=record.mac,
                vhost=host,
            )

        async def one(record: VmRecord) -> None:
            try:
                if not record.remote:
                    pre = await agent.PortHandler(
                        port(record, common_pb2.PRECREATE), timeout=self.agent_timeout
                    )
                    record.ip, record.mac = pre.port.ip, pre.port.mac
                    record.remote, record.device = pre.port.remoteid, pre.port.deviceid
                made = await agent.PortHandler(port(record, common_pb2.CREATE), timeout=self.agent_timeout)
            except grpc.aio.AioRpcError as exc:
                if not is_permanent(exc.code()):
                    raise
                record.status, record.error = common_pb2.ERROR, f"{exc.code().name}: {exc.details()}"
                return
            ok = made.return_code == common_pb2.OK
            record.status = common_pb2.DONE if ok else common_pb2.ERROR
            record.error = "" if ok else made.return_message

        try:
            await asyncio.gather(*(one(r) for r in todo))
        except grpc.aio.AioRpcError as exc:
            _raise(exc, f"agent PortHandler on {host}")

    @activity.defn(name="compute.fail_batch")
    async def fail_batch(self, failure: BatchFailure) -> BatchOutcome:
        """Record a batch that failed as a whole: its unfinished VMs become ERROR with the reason."""
        meta = await self.store.meta(failure.config_id)
        if meta is None:
            return BatchOutcome()
        names = await self.store.batch_names(failure.config_id, failure.host, failure.batch, meta.batch_size)
        records = await self.store.vms(failure.config_id, failure.host, names)
        todo = [r for r in records if r.status != common_pb2.DONE or failure.operation == "delete"]
        for record in todo:
            record.status, record.error = common_pb2.ERROR, failure.reason
        await self.store.put_vms(failure.config_id, failure.host, todo)
        return BatchOutcome(done=len(records) - len(todo), failed=len(todo))

    @activity.defn(name="compute.delete_batch")
    async def delete_batch(self, batch: BatchInput) -> BatchOutcome:
        """Delete one batch of VMs: in the agent, their addresses, then their records."""
        self._count_retry()
        async with heartbeating():
            return await self._delete_batch(batch)

    async def _delete_batch(self, batch: BatchInput) -> BatchOutcome:
        records, host, meta = await self._batch(batch)
        plugin, netconfig_id = meta.plugin, meta.netconfig_id
        if not records:
            return BatchOutcome()
        for record in records:
            record.status, record.error = common_pb2.DELETING, ""
        await self.store.put_vms(batch.config_id, batch.host, records)
        endpoint = str(host["endpoint"])
        agent = self._agent(endpoint)
        try:
            if plugin == "alcor":
                for record in records:
                    request = agent_pb2.InternalPortConfig(
                        operation_type=common_pb2.DELETE,
                        id=record.id,
                        name=record.name,
                        projectid=record.project,
                        remoteid=record.remote,
                        deviceid=record.device,
                        vhost=batch.host,
                    )
                    await agent.PortHandler(request, timeout=self.agent_timeout)
            else:
                names = [r.name for r in records]
                await agent.DeleteVms(
                    agent_pb2.DeleteVmsRequest(vhost=batch.host, names=names), timeout=self.agent_timeout
                )
        except grpc.aio.AioRpcError as exc:
            if not _host_is_gone(endpoint, exc):
                _raise(exc, f"agent delete on {batch.host}")
            log.info("agent_gone_vms_gone_with_it", host=batch.host, endpoint=endpoint)
        if plugin != "alcor":
            try:
                await self.network.ReleasePorts(
                    network_pb2.ReleasePortsRequest(
                        netconfig_id=netconfig_id, vm_ids=[r.id for r in records]
                    ),
                    timeout=120,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:  # the network config went first: nothing to free
                    _raise(exc, "network ReleasePorts")
        await self.store.drop_vms(batch.config_id, batch.host, [r.name for r in records])
        return BatchOutcome(done=len(records))

    @activity.defn(name="compute.overlay_index")
    async def overlay_index(self, config_id: str) -> int:
        """Group the DONE VMs by VNI and host for the overlay programming; returns the VNI count."""
        hosts = await self.store.hosts(config_id)
        vnis: set[int] = set()
        # Fake vhosts have no kernel to program, and pushing every VM to every vhost is O(VMs x hosts):
        # at 10,000 fake hosts that is the whole cost of a deployment, for nothing.
        for host in [name for name, info in hosts.items() if not info.get("fake")]:
            by_vni: dict[int, list[list[str]]] = defaultdict(list)
            for record in await self.store.vms(config_id, host):
                if record.status == common_pb2.DONE and record.vni:
                    by_vni[record.vni].append([record.ip, record.mac])
            for vni, entries in by_vni.items():
                await self.store.put_overlay(config_id, vni, host, entries)
                vnis.add(vni)
        return len(vnis)

    @activity.defn(name="compute.program_overlay")
    async def program_overlay(self, ref: ShardRef) -> int:
        """Tell each host of the shard which vhosts share its VNIs and push their VMs (DESIGN §5)."""
        self._count_retry()
        hosts = await self.store.hosts(ref.config_id)
        overlay = await self.store.overlay(ref.config_id)
        async with heartbeating():
            return await self._program_overlay(ref, hosts, overlay)

    async def _program_overlay(
        self,
        ref: ShardRef,
        hosts: dict[str, dict[str, object]],
        overlay: dict[int, dict[str, list[list[str]]]],
    ) -> int:
        calls = 0
        for name in await self.store.shard_hosts(ref.config_id, ref.shard):
            agent = self._agent(str(hosts[name]["endpoint"]))
            for vni, members in overlay.items():
                if name not in members:
                    continue
                others = [h for h in members if h != name]
                request = agent_pb2.SetVpcPeersRequest(
                    vhost=name,
                    vni=vni,
                    vteps=sorted({str(hosts[h]["vtep"]) for h in others if hosts[h]["vtep"]}),
                    neighbors=[
                        agent_pb2.Neighbor(ip=ip, mac=mac, vtep=str(hosts[h]["vtep"]))
                        for h in others
                        for ip, mac in members[h]
                    ],
                )
                try:
                    await agent.SetVpcPeers(request, timeout=self.agent_timeout)
                except grpc.aio.AioRpcError as exc:
                    _raise(exc, f"agent SetVpcPeers on {name}")
                calls += 1
        return calls

    @activity.defn(name="compute.finish")
    async def finish(self, result: FinishInput) -> None:
        """The end of an operation: a clean delete forgets the config; anything else records the outcome."""
        if result.operation == "delete" and not result.failed and not result.failure:
            await self.store.delete(result.config_id)
            log.info("compute_deleted", config_id=result.config_id, vms=result.done)
            return
        await self.store.finish_operation(result.config_id, result.failure)
        log.info(
            "compute_operation_finished",
            config_id=result.config_id,
            operation=result.operation,
            done=result.done,
            failed=result.failed,
            failure=result.failure,
        )


def _host_is_gone(endpoint: str, exc: grpc.aio.AioRpcError) -> bool:
    """An agent whose unix socket no longer exists went with its vhost (topology deleted): so did its VMs."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE or not endpoint.startswith("unix:"):
        return False
    return not os.path.exists(endpoint.removeprefix("unix://").removeprefix("unix:"))


def all_activities(a: ComputeActivities) -> Sequence[object]:
    """Every activity method, for the worker."""
    return [
        a.shard_plan,
        a.create_batch,
        a.fail_batch,
        a.delete_batch,
        a.overlay_index,
        a.program_overlay,
        a.finish,
    ]
