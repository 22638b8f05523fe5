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
from temporalio import activity
from temporalio.exceptions import ApplicationError

from merak.grpcclient import ChannelPool
from merak.logs import get_logger
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, network_pb2_grpc
from services.compute.churn import ChurnRun
from services.compute.contracts import (
    DELETE,
    PACE_LEAD,
    PRUNE,
    UPDATE,
    ActivityName,
    BatchFailure,
    BatchInput,
    BatchOutcome,
    ChurnInput,
    FinishInput,
    GroupInput,
    HostBatches,
    PluginName,
    ShardPlan,
    ShardRef,
)
from services.compute.metrics import WorkerMetrics
from services.compute.plugins import PLUGINS, AlcorVms, Calls, VmPlugin, raise_activity_error
from services.compute.plugins.alcor import DATA_PLANE_READY, GOALSTATE_TIMEOUT
from services.compute.plugins.base import each_host
from services.compute.store import ComputeStore, HostRecord, Meta, VmRecord

log = get_logger(__name__)


HEARTBEAT_SECONDS = 5.0
# Hosts readied at once by prepare_hosts (an OVN chassis start is three processes).
PREPARE_CONCURRENCY = 8


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


async def wait_until(start_at: float) -> None:
    """A paced batch waits for its time (at most PACE_LEAD and a second: a clock that jumped does not
    hold it longer); an unpaced or retried one goes at once."""
    delay = start_at - time.time()
    if delay > 0:
        await asyncio.sleep(min(delay, PACE_LEAD + 1.0))


class ComputeActivities:
    """The activities, with their dependencies: the inventory, the network service, agent channels."""

    def __init__(
        self,
        store: ComputeStore,
        network: network_pb2_grpc.MerakNetworkServiceAsyncStub,
        metrics: WorkerMetrics,
        *,
        agent_timeout: float = 600.0,
        alcor_goalstate_timeout: float = GOALSTATE_TIMEOUT,
    ) -> None:
        self.store = store
        self.network = network
        self.metrics = metrics
        self.agent_timeout = agent_timeout
        self.plugins = {name: kind(network, agent_timeout) for name, kind in PLUGINS.items()}
        alcor = self.plugins[PluginName.ALCOR]
        assert isinstance(alcor, AlcorVms)
        alcor.goalstate_timeout = alcor_goalstate_timeout
        self._agents = ChannelPool()

    def _plugin(self, name: str) -> VmPlugin:
        plugin = self.plugins.get(name)
        if plugin is None:
            raise ApplicationError(f"unknown plugin {name!r}", non_retryable=True)
        return plugin

    async def _record(self, config_id: str, meta: Meta, calls: Calls, ready: int = 0) -> float:
        """A batch's control-plane calls and VMs made ready, into the config's results, stamped with
        the seconds since the operation started (returned)."""
        at = time.time() - meta.started_at
        await self.store.results.record(
            config_id, meta.plugin, [(c.operation, c.code, c.seconds, at) for c in calls], [at] * ready
        )
        return at

    def _agent(self, endpoint: str) -> agent_pb2_grpc.MerakAgentServiceAsyncStub:
        return agent_pb2_grpc.MerakAgentServiceStub(self._agents.channel(endpoint))

    async def close(self) -> None:
        """Close the agent channels."""
        await self._agents.close()

    def _count_retry(self) -> None:
        info = activity.info()
        if info.attempt > 1:
            self.metrics.retries.labels(info.activity_type).inc()

    @activity.defn(name=ActivityName.SHARD_PLAN)
    async def shard_plan(self, ref: ShardRef) -> ShardPlan:
        """The hosts of a shard and their batch counts, their VMs written first if CREATE only counted
        them."""
        meta = await self.store.progress.meta(ref.config_id)
        if meta is None:
            raise ApplicationError(f"compute config {ref.config_id} is gone", non_retryable=True)
        names = await self.store.vms.shard_hosts(ref.config_id, ref.shard)
        # The VMs a CREATE counted on these hosts, written now (any operation: a DELETE after a CREATE
        # that failed first finds them too).
        async with heartbeating():
            placed = await self.store.vms.place_pending(ref.config_id, names)
        if placed:
            log.info("shard_placed", config_id=ref.config_id, shard=ref.shard, vms=placed)
        hosts = await self.store.vms.hosts_named(ref.config_id, names)
        if ref.operation == PRUNE:
            counts = {n: await self.store.vms.dropped_count(ref.config_id, n) for n in names}
        elif ref.operation == DELETE:
            # Every VM the host's list holds (a churn cut short leaves more than its count).
            counts = {n: await self.store.vms.count(ref.config_id, n) for n in names}
        else:
            counts = {n: hosts[n].count for n in names if n in hosts}
        return ShardPlan(
            [
                HostBatches(
                    n,
                    math.ceil(counts[n] / meta.batch_size),
                    meta.batch_size,
                    counts[n],
                    fake=n in hosts and hosts[n].fake,
                )
                for n in names
                if counts.get(n)
            ]
        )

    @activity.defn(name=ActivityName.PREPARE_HOSTS)
    async def prepare_hosts(self, ref: ShardRef) -> int:
        """Ready every host of the shard for the plugin's VMs, a few at a time; how many were."""
        self._count_retry()
        meta = await self.store.progress.meta(ref.config_id)
        if meta is None:
            raise ApplicationError(f"compute config {ref.config_id} is gone", non_retryable=True)
        plugin = self._plugin(meta.plugin)
        names = await self.store.vms.shard_hosts(ref.config_id, ref.shard)
        hosts = await self.store.vms.hosts_named(ref.config_id, names)
        gate = asyncio.Semaphore(PREPARE_CONCURRENCY)
        calls: Calls = []

        async def one(name: str) -> None:
            async with gate:
                await plugin.prepare(self._agent(hosts[name].endpoint), name, meta, calls)

        async with heartbeating():
            try:
                await asyncio.gather(*(one(n) for n in names if n in hosts and not hosts[n].leaving))
            finally:
                await self._record(ref.config_id, meta, calls)
        return len(hosts)

    async def _batch(self, batch: BatchInput) -> tuple[list[VmRecord], HostRecord, Meta]:
        meta = await self.store.progress.meta(batch.config_id)
        if meta is None:
            raise ApplicationError(f"compute config {batch.config_id} is gone", non_retryable=True)
        found = await self.store.vms.hosts_named(batch.config_id, [batch.host])
        if batch.host not in found:
            raise ApplicationError(
                f"host {batch.host} is not in compute config {batch.config_id}", non_retryable=True
            )
        host = found[batch.host]
        names = await self.store.vms.batch_names(
            batch.config_id, batch.host, batch.batch, meta.batch_size, dropped=batch.operation == PRUNE
        )
        records = await self.store.vms.records(batch.config_id, batch.host, names)
        return records, host, meta

    @activity.defn(name=ActivityName.CREATE_BATCH)
    async def create_batch(self, batch: BatchInput) -> BatchOutcome:
        """Create one batch of VMs of one host (addresses first, then the agent's batch create)."""
        self._count_retry()
        async with heartbeating():
            await wait_until(batch.start_at)
            return await self._create_batch(batch)

    async def _create_batch(self, batch: BatchInput) -> BatchOutcome:
        records, host, meta = await self._batch(batch)
        todo = [r for r in records if r.status != common_pb2.DONE]
        if todo:
            agent = self._agent(host.endpoint)
            calls: Calls = []
            try:
                await self._plugin(meta.plugin).create(agent, batch.host, meta, todo, calls)
            except BaseException:
                await self._record(batch.config_id, meta, calls)
                raise
            await self.store.vms.put(batch.config_id, batch.host, todo)
            ready = sum(record.status == common_pb2.DONE for record in todo)
            elapsed = await self._record(batch.config_id, meta, calls, ready)
            for _ in range(ready):
                self.metrics.vm_create_seconds.observe(elapsed)
            for call in calls:
                if call.operation == DATA_PLANE_READY and call.code == "OK":
                    self.metrics.data_plane_ready_seconds.labels(meta.plugin).observe(call.seconds)
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

    @activity.defn(name=ActivityName.FAIL_BATCH)
    async def fail_batch(self, failure: BatchFailure) -> BatchOutcome:
        """Record a batch that failed as a whole: its unfinished VMs become ERROR with the reason."""
        meta = await self.store.progress.meta(failure.config_id)
        if meta is None:
            return BatchOutcome()
        names = await self.store.vms.batch_names(
            failure.config_id,
            failure.host,
            failure.batch,
            meta.batch_size,
            dropped=failure.operation == PRUNE,
        )
        records = await self.store.vms.records(failure.config_id, failure.host, names)
        todo = [r for r in records if r.status != common_pb2.DONE or failure.operation in (DELETE, PRUNE)]
        for record in todo:
            record.status, record.error = common_pb2.ERROR, failure.reason
        await self.store.vms.put(failure.config_id, failure.host, todo)
        return BatchOutcome(done=len(records) - len(todo), failed=len(todo))

    @activity.defn(name=ActivityName.DELETE_BATCH)
    async def delete_batch(self, batch: BatchInput) -> BatchOutcome:
        """Delete one batch of VMs: in the agent, their addresses, then their records."""
        self._count_retry()
        async with heartbeating():
            await wait_until(batch.start_at)
            return await self._delete_batch(batch)

    async def _delete_batch(self, batch: BatchInput) -> BatchOutcome:
        records, host, meta = await self._batch(batch)
        if not records:
            return BatchOutcome()
        plugin = self._plugin(meta.plugin)
        await self.store.vms.mark_hosts(batch.config_id, {batch.host: records}, common_pb2.DELETING)
        calls: Calls = []
        try:
            await plugin.delete(self._agent(host.endpoint), batch.host, meta, records, calls)
        except grpc.aio.AioRpcError as exc:
            if not _host_is_gone(host.endpoint, exc):
                await self._record(batch.config_id, meta, calls)
                raise_activity_error(exc, f"agent delete on {batch.host}")
            log.info("agent_gone_vms_gone_with_it", host=batch.host, endpoint=host.endpoint)
        try:
            await plugin.release(meta, records, calls)
        finally:
            await self._record(batch.config_id, meta, calls)
        await self.store.vms.drop(batch.config_id, batch.host, [r.name for r in records])
        return BatchOutcome(done=len(records))

    async def _group(
        self, group: GroupInput
    ) -> tuple[dict[str, list[VmRecord]], dict[str, HostRecord], Meta]:
        """The batch 0 records of each host of a group, its hosts and the config's meta, in a few round
        trips whatever the group's size."""
        meta = await self.store.progress.meta(group.config_id)
        if meta is None:
            raise ApplicationError(f"compute config {group.config_id} is gone", non_retryable=True)
        hosts = await self.store.vms.hosts_named(group.config_id, group.hosts)
        missing = [h for h in group.hosts if h not in hosts]
        if missing:
            raise ApplicationError(
                f"host {missing[0]} is not in compute config {group.config_id}", non_retryable=True
            )
        records = await self.store.vms.first_batches(
            group.config_id, group.hosts, meta.batch_size, dropped=group.operation == PRUNE
        )
        return records, hosts, meta

    @activity.defn(name=ActivityName.CREATE_GROUP)
    async def create_group(self, group: GroupInput) -> BatchOutcome:
        """Create the single batches of several fake hosts: one address request for all, then each
        host's agent call, side by side. The hosts that failed raise after the others are recorded
        (a retry redoes only them: DONE VMs are skipped)."""
        self._count_retry()
        async with heartbeating():
            records, hosts, meta = await self._group(group)
            todo = {h: [r for r in found if r.status != common_pb2.DONE] for h, found in records.items()}
            todo = {h: found for h, found in todo.items() if found}
            failed: dict[str, BaseException] = {}
            if todo:
                calls: Calls = []
                agents = {h: self._agent(hosts[h].endpoint) for h in todo}
                try:
                    failed = await self._plugin(meta.plugin).create_hosts(agents, meta, todo, calls)
                except BaseException:
                    await self._record(group.config_id, meta, calls)
                    raise
                made = {h: found for h, found in todo.items() if h not in failed}
                await self.store.vms.put_hosts(group.config_id, made)
                ready = sum(r.status == common_pb2.DONE for found in made.values() for r in found)
                elapsed = await self._record(group.config_id, meta, calls, ready)
                for _ in range(ready):
                    self.metrics.vm_create_seconds.observe(elapsed)
            done = sum(r.status == common_pb2.DONE for h, found in records.items() for r in found)
            total = sum(len(found) for found in records.values())
            log.info(
                "group_created",
                config_id=group.config_id,
                hosts=len(group.hosts),
                vms=total,
                done=done,
                failed=len(failed),
            )
            if failed:
                host, error = next(iter(failed.items()))
                log.warning("group_hosts_failed", config_id=group.config_id, hosts=sorted(failed), first=host)
                raise error
            return BatchOutcome(done=done, failed=total - done)

    @activity.defn(name=ActivityName.DELETE_GROUP)
    async def delete_group(self, group: GroupInput) -> BatchOutcome:
        """Delete the single batches of several fake hosts: each host's agent call side by side, then
        one address release for all, then the records. The hosts that failed raise after the others
        are gone (a retry finds only theirs)."""
        self._count_retry()
        async with heartbeating():
            records, hosts, meta = await self._group(group)
            records = {h: found for h, found in records.items() if found}
            if not records:
                return BatchOutcome()
            plugin = self._plugin(meta.plugin)
            await self.store.vms.mark_hosts(group.config_id, records, common_pb2.DELETING)
            calls: Calls = []

            async def one(host: str) -> None:
                try:
                    await plugin.delete(self._agent(hosts[host].endpoint), host, meta, records[host], calls)
                except grpc.aio.AioRpcError as exc:
                    if not _host_is_gone(hosts[host].endpoint, exc):
                        raise_activity_error(exc, f"agent delete on {host}")
                    log.info("agent_gone_vms_gone_with_it", host=host, endpoint=hosts[host].endpoint)

            failed = await each_host({h: one(h) for h in records})
            gone = {h: found for h, found in records.items() if h not in failed}
            try:
                await plugin.release(meta, [r for found in gone.values() for r in found], calls)
            finally:
                await self._record(group.config_id, meta, calls)
            names = {h: [r.name for r in found] for h, found in gone.items()}
            await self.store.vms.drop_hosts(group.config_id, names)
            if failed:
                raise next(iter(failed.values()))
            return BatchOutcome(done=sum(len(found) for found in gone.values()))

    @activity.defn(name=ActivityName.OVERLAY_INDEX)
    async def overlay_index(self, config_id: str) -> int:
        """Group the DONE VMs by VNI and host for the overlay programming; returns the VNI count."""
        hosts = await self.store.vms.hosts(config_id)
        before = await self.store.overlay.reset(config_id)
        vnis: set[int] = set()
        now: dict[int, dict[str, list[list[str]]]] = defaultdict(dict)
        # Fake vhosts have no kernel to program, and pushing every VM to every vhost is O(VMs x hosts):
        # at 10,000 fake hosts that is the whole cost of a deployment, for nothing.
        for host in [name for name, info in hosts.items() if not info.fake and not info.leaving]:
            by_vni: dict[int, list[list[str]]] = defaultdict(list)
            for record in await self.store.vms.records(config_id, host):
                if record.status == common_pb2.DONE and record.vni:
                    entry = [record.ip, record.mac, record.route] if record.route else [record.ip, record.mac]
                    by_vni[record.vni].append(entry)
            for vni, entries in by_vni.items():
                await self.store.overlay.put(config_id, vni, host, entries)
                now[vni][host] = entries
                vnis.add(vni)
        # What an UPDATE took away: the other vhosts of its VNI drop its entries.
        withdrawn: dict[int, dict[str, list[list[str]]]] = defaultdict(dict)
        for vni, members in before.items():
            for host, entries in members.items():
                kept = {tuple(e) for e in now.get(vni, {}).get(host, [])}
                gone = [e for e in entries if tuple(e) not in kept]
                if gone:
                    withdrawn[vni][host] = gone
        await self.store.overlay.put_withdrawn(config_id, dict(withdrawn))
        return len(vnis)

    @activity.defn(name=ActivityName.PROGRAM_OVERLAY)
    async def program_overlay(self, ref: ShardRef) -> int:
        """Tell each host of the shard which vhosts share its VNIs and push their VMs (DESIGN §5)."""
        self._count_retry()
        hosts = await self.store.vms.hosts(ref.config_id)
        overlay = await self.store.overlay.members(ref.config_id)
        withdrawn = await self.store.overlay.withdrawn(ref.config_id)
        async with heartbeating():
            return await self._program_overlay(ref, hosts, overlay, withdrawn)

    async def _program_overlay(
        self,
        ref: ShardRef,
        hosts: dict[str, HostRecord],
        overlay: dict[int, dict[str, list[list[str]]]],
        withdrawn: dict[int, dict[str, list[list[str]]]],
    ) -> int:
        calls = 0
        for name in await self.store.vms.shard_hosts(ref.config_id, ref.shard):
            if name not in hosts or hosts[name].leaving:
                continue
            agent = self._agent(hosts[name].endpoint)
            for vni, members in overlay.items():
                if name not in members:
                    continue
                taken = withdrawn.get(vni, {})
                if _routed(members):
                    request = _routed_peers(name, vni, members, hosts)
                else:
                    request = _bridged_peers(name, vni, members, hosts, taken)
                try:
                    await agent.SetVpcPeers(request, timeout=self.agent_timeout)
                except grpc.aio.AioRpcError as exc:
                    raise_activity_error(exc, f"agent SetVpcPeers on {name}")
                calls += 1
        return calls

    @activity.defn(name=ActivityName.CHURN)
    async def churn(self, churn: ChurnInput) -> BatchOutcome:
        """Replace VMs at a rate for a while, the population kept (services/compute/churn.py)."""
        self._count_retry()
        meta = await self.store.progress.meta(churn.config_id)
        if meta is None:
            raise ApplicationError(f"compute config {churn.config_id} is gone", non_retryable=True)
        run = ChurnRun(self.store, self._plugin(meta.plugin), self._agent, self._record, self.agent_timeout)
        async with heartbeating():
            return await run.run(churn, meta)

    @activity.defn(name=ActivityName.FINISH)
    async def finish(self, result: FinishInput) -> None:
        """The end of an operation: a clean delete forgets the config; anything else records the outcome."""
        if result.operation == DELETE and not result.failed and not result.failure:
            await self.store.delete(result.config_id)
            log.info("compute_deleted", config_id=result.config_id, vms=result.done)
            return
        if result.operation == UPDATE and not result.failed and not result.failure:
            # Only a clean update forgets its drop lists: what failed to go is deleted by the next
            # UPDATE or DELETE.
            await self.store.vms.finish_update(result.config_id)
        await self.store.progress.finish(result.config_id, result.failure)
        log.info(
            "compute_operation_finished",
            config_id=result.config_id,
            operation=result.operation,
            done=result.done,
            failed=result.failed,
            failure=result.failure,
        )


def _routed(members: dict[str, list[list[str]]]) -> bool:
    """A VNI whose VMs' addresses come in per-host blocks (their entries carry the route)."""
    return any(len(entry) > 2 and entry[2] for entries in members.values() for entry in entries)


def _routed_peers(
    name: str, vni: int, members: dict[str, list[list[str]]], hosts: dict[str, HostRecord]
) -> agent_pb2.SetVpcPeersRequest:
    """The whole routed overlay of a VNI for vhost `name`: each other vhost and the prefixes it holds
    (its blocks, and the /32s of addresses it borrowed outside them), and its own blocks (its borrowed
    addresses are not among them: the agent routes those to their VMs on br0). A vhost holds one set
    of entries per remote vhost, not per remote VM (docs/routed-overlay.md)."""

    def prefixes(host: str, *, borrowed: bool) -> list[str]:
        routes = {entry[2] for entry in members[host] if len(entry) > 2 and entry[2]}
        return sorted(r for r in routes if borrowed or not r.endswith("/32"))

    return agent_pb2.SetVpcPeersRequest(
        vhost=name,
        vni=vni,
        routed=True,
        peers=[
            agent_pb2.VpcPeer(vtep=hosts[h].vtep, prefixes=prefixes(h, borrowed=True))
            for h in sorted(members)
            if h != name and h in hosts and hosts[h].vtep
        ],
        local_prefixes=prefixes(name, borrowed=False),
    )


def _bridged_peers(
    name: str,
    vni: int,
    members: dict[str, list[list[str]]],
    hosts: dict[str, HostRecord],
    taken: dict[str, list[list[str]]],
) -> agent_pb2.SetVpcPeersRequest:
    """The bridged overlay of a VNI for vhost `name`: the other vhosts (flood list) and a neighbour per
    remote VM, and the neighbours an UPDATE took away."""
    others = [h for h in members if h != name]
    return agent_pb2.SetVpcPeersRequest(
        vhost=name,
        vni=vni,
        vteps=sorted({hosts[h].vtep for h in others if hosts[h].vtep}),
        neighbors=[
            agent_pb2.Neighbor(ip=entry[0], mac=entry[1], vtep=hosts[h].vtep)
            for h in others
            for entry in members[h]
        ],
        removed_neighbors=[
            agent_pb2.Neighbor(ip=entry[0], mac=entry[1], vtep=hosts[h].vtep if h in hosts else "")
            for h, entries in taken.items()
            if h != name
            for entry in entries
        ],
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
        a.prepare_hosts,
        a.create_batch,
        a.fail_batch,
        a.delete_batch,
        a.create_group,
        a.delete_group,
        a.overlay_index,
        a.program_overlay,
        a.churn,
        a.finish,
    ]
