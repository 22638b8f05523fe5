"""Compute's Temporal workflows: one per operation, one child per shard of hosts.

Only deterministic code here: the sandbox re-imports this module, so it imports nothing with I/O.
A shard's history grows with hosts x batches (50 hosts x 8 batches of 250 = 2,000 VMs per host is
~400 activities, ~1,300 events), far below Temporal's 51,200-event and 2,000-pending limits.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from services.compute.contracts import (
        CREATE,
        DELETE,
        PACE_LEAD,
        PRUNE,
        RANDOM,
        RPS,
        UPDATE,
        ActivityName,
        BatchFailure,
        BatchInput,
        BatchOutcome,
        ChurnInput,
        DeployInput,
        DeployResult,
        FinishInput,
        GroupInput,
        HostBatches,
        ShardInput,
        ShardPlan,
        ShardRef,
    )

BATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
QUICK = timedelta(minutes=2)
BATCH_TIMEOUT = timedelta(minutes=20)
# Batch activities heartbeat every few seconds: work lost with a dead worker is retried this soon.
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
RANDOM_CONCURRENCY = 8
# Fake hosts whose VMs make one batch go to the activities in groups of up to this many VMs.
GROUP_VMS = 1_000


def _reason(error: BaseException) -> str:
    """The innermost message of an activity failure."""
    cause: BaseException | None = error
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    return str(cause or error)


@workflow.defn(name="compute.HostShard")
class HostShardWorkflow:
    """Creates or deletes the VMs of a shard of hosts, batch by batch, paced by the schedule."""

    @workflow.run
    async def run(self, shard: ShardInput) -> DeployResult:
        """Run every batch of every host of the shard."""
        # Planning writes the shard's VM records (50 hosts x 2,000 VMs is 100,000): it heartbeats.
        plan: ShardPlan = await workflow.execute_activity(
            ActivityName.SHARD_PLAN,
            ShardRef(shard.config_id, shard.shard, shard.operation),
            result_type=ShardPlan,
            start_to_close_timeout=BATCH_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=BATCH_RETRY,
        )
        if shard.operation in (CREATE, UPDATE) and plan.hosts and workflow.patched("prepare-hosts"):
            await self._prepare(shard)
        jobs = [(h, b) for h in plan.hosts for b in range(h.batches)]
        if shard.schedule.kind == RPS and shard.rps > 0:
            outcomes = await self._paced(shard, jobs)
        elif shard.schedule.kind == RANDOM:
            random.Random(f"{shard.schedule.seed}:{shard.shard}").shuffle(jobs)
            gate = asyncio.Semaphore(RANDOM_CONCURRENCY)

            async def gated(host: HostBatches, batch: int) -> BatchOutcome:
                async with gate:
                    return await self._batch(shard, host.host, batch)

            outcomes = await asyncio.gather(*(gated(h, b) for h, b in jobs))
        else:  # SEQUENTIAL: each host's batches one after another, hosts side by side
            groups: list[list[str]] = []
            alone = plan.hosts
            if workflow.patched("fake-host-groups"):
                groups, alone = fake_groups(plan.hosts, GROUP_VMS)

            async def host_batches(host: HostBatches) -> list[BatchOutcome]:
                return [await self._batch(shard, host.host, b) for b in range(host.batches)]

            per_host = await asyncio.gather(
                *(host_batches(h) for h in alone), *(self._group(shard, g) for g in groups)
            )
            outcomes = [o for host in per_host for o in host]
        return DeployResult(done=sum(o.done for o in outcomes), failed=sum(o.failed for o in outcomes))

    async def _prepare(self, shard: ShardInput) -> None:
        """Every host of the shard ready for VMs before the first batch (an OVN chassis), so a batch
        measures its ports, not a host starting. A failure here is the batches' to report."""
        try:
            await workflow.execute_activity(
                ActivityName.PREPARE_HOSTS,
                ShardRef(shard.config_id, shard.shard, shard.operation),
                result_type=int,
                start_to_close_timeout=BATCH_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=BATCH_RETRY,
            )
        except ActivityError as error:
            workflow.logger.warning("hosts not prepared: %s", _reason(error))

    async def _paced(self, shard: ShardInput, jobs: list[tuple[HostBatches, int]]) -> list[BatchOutcome]:
        """Start batches so that VMs begin at `shard.rps` per second: durable timers to within
        PACE_LEAD of each batch's time (no busy waiting), the rest waited out by the activity."""
        start = workflow.now()
        started: list[asyncio.Task[BatchOutcome]] = []
        for (host, batch), offset in zip(jobs, start_offsets(jobs, shard.rps), strict=True):
            due = start + timedelta(seconds=offset)
            wait = (due - workflow.now()).total_seconds() - PACE_LEAD
            if wait > 0:
                await workflow.sleep(wait)
            started.append(
                asyncio.create_task(self._batch(shard, host.host, batch, start_at=due.timestamp()))
            )
        return list(await asyncio.gather(*started))

    async def _batch(
        self, shard: ShardInput, host: str, batch: int, *, start_at: float = 0.0
    ) -> BatchOutcome:
        activity = ActivityName.CREATE_BATCH if shard.operation == CREATE else ActivityName.DELETE_BATCH
        try:
            outcome: BatchOutcome = await workflow.execute_activity(
                activity,
                BatchInput(shard.config_id, host, batch, start_at, shard.operation),
                result_type=BatchOutcome,
                start_to_close_timeout=BATCH_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=BATCH_RETRY,
            )
            return outcome
        except ActivityError as error:
            # The batch failed as a whole (after retries, or permanently): its VMs carry the reason,
            # and the other batches of the host go on.
            return await self._fail(shard, host, batch, _reason(error))

    async def _group(self, shard: ShardInput, hosts: list[str]) -> list[BatchOutcome]:
        """The single batches of several fake hosts in one activity; when it fails for good, each host's
        batch is recorded failed (what was done stays done: a retry or a failure redoes nothing)."""
        activity = ActivityName.CREATE_GROUP if shard.operation == CREATE else ActivityName.DELETE_GROUP
        try:
            outcome: BatchOutcome = await workflow.execute_activity(
                activity,
                GroupInput(shard.config_id, hosts, shard.operation),
                result_type=BatchOutcome,
                start_to_close_timeout=BATCH_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=BATCH_RETRY,
            )
            return [outcome]
        except ActivityError as error:
            reason = _reason(error)
            return list(await asyncio.gather(*(self._fail(shard, host, 0, reason) for host in hosts)))

    async def _fail(self, shard: ShardInput, host: str, batch: int, reason: str) -> BatchOutcome:
        """Record a batch that failed as a whole: its unfinished VMs carry the reason."""
        recorded: BatchOutcome = await workflow.execute_activity(
            ActivityName.FAIL_BATCH,
            BatchFailure(shard.config_id, host, batch, shard.operation, reason),
            result_type=BatchOutcome,
            start_to_close_timeout=QUICK,
            retry_policy=BATCH_RETRY,
        )
        return recorded


def fake_groups(hosts: list[HostBatches], limit: int) -> tuple[list[list[str]], list[HostBatches]]:
    """The fake hosts whose VMs make a single batch, in groups of up to `limit` VMs (a host larger than
    that is a group of its own), and the other hosts, batch by batch as before."""
    groups: list[list[str]] = []
    alone: list[HostBatches] = []
    current: list[str] = []
    size = 0
    for host in hosts:
        if not host.fake or host.batches != 1:
            alone.append(host)
            continue
        vms = host.size_of(0)
        if current and size + vms > limit:
            groups.append(current)
            current, size = [], 0
        current.append(host.host)
        size += vms
    if current:
        groups.append(current)
    return groups, alone


def start_offsets(jobs: list[tuple[HostBatches, int]], rps: float) -> list[float]:
    """Seconds after the start at which each batch begins, so that VMs begin at `rps` per second:
    a batch starts once the VMs of the batches before it have had their time."""
    offsets, vms_before = [], 0
    for host, batch in jobs:
        offsets.append(vms_before / rps)
        vms_before += host.size_of(batch)  # the VMs this batch really holds
    return offsets


@workflow.defn(name="compute.Deploy")
class DeployComputeWorkflow:
    """One create, delete or update of a compute config: the shards (an update prunes first, then
    creates), then the overlay (create, update), then the end."""

    @workflow.run
    async def run(self, deploy: DeployInput) -> DeployResult:
        """Run the operation."""
        result = DeployResult()
        failure = ""
        try:
            if deploy.operation in (UPDATE, DELETE):
                # The VMs an update took out (its drop lists: an UPDATE that was cut short or failed
                # leaves some) go first; then an update creates, a delete deletes the rest.
                pruned = await self._shards(deploy, PRUNE)
                rest = await self._shards(deploy, CREATE if deploy.operation == UPDATE else DELETE)
                result = DeployResult(pruned.done + rest.done, pruned.failed + rest.failed)
            else:
                result = await self._shards(deploy, deploy.operation)
            if deploy.operation in (CREATE, UPDATE) and result.done:
                if deploy.program_overlay:  # else Alcor's goal states build the overlay
                    await workflow.execute_activity(
                        ActivityName.OVERLAY_INDEX,
                        deploy.config_id,
                        start_to_close_timeout=timedelta(minutes=30),
                        retry_policy=BATCH_RETRY,
                    )
                    await asyncio.gather(
                        *(
                            workflow.execute_activity(
                                ActivityName.PROGRAM_OVERLAY,
                                ShardRef(deploy.config_id, n),
                                start_to_close_timeout=timedelta(hours=2),
                                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                                retry_policy=BATCH_RETRY,
                            )
                            for n in range(deploy.shards)
                        )
                    )
                if deploy.churn_rate > 0 and deploy.churn_seconds > 0 and not result.failed:
                    churned: BatchOutcome = await workflow.execute_activity(
                        ActivityName.CHURN,
                        ChurnInput(deploy.config_id, deploy.churn_rate, deploy.churn_seconds),
                        result_type=BatchOutcome,
                        start_to_close_timeout=timedelta(seconds=deploy.churn_seconds) + BATCH_TIMEOUT,
                        heartbeat_timeout=HEARTBEAT_TIMEOUT,
                        retry_policy=BATCH_RETRY,
                    )
                    result = DeployResult(result.done, result.failed + churned.failed)
        except (ActivityError, ChildWorkflowError, ApplicationError) as error:
            failure = _reason(error)
        await workflow.execute_activity(
            ActivityName.FINISH,
            FinishInput(deploy.config_id, deploy.operation, result.done, result.failed, failure),
            start_to_close_timeout=QUICK,
            retry_policy=BATCH_RETRY,
        )
        return result

    async def _shards(self, deploy: DeployInput, operation: str) -> DeployResult:
        """Every shard's batches of one operation, side by side."""
        workflow_id = workflow.info().workflow_id
        phase = f"-{operation}" if operation != deploy.operation else ""
        results = await asyncio.gather(
            *(
                workflow.execute_child_workflow(
                    HostShardWorkflow.run,
                    ShardInput(
                        deploy.config_id,
                        operation,
                        n,
                        deploy.schedule,
                        deploy.schedule.rps / deploy.shards,
                    ),
                    id=f"{workflow_id}{phase}-shard-{n}",
                )
                for n in range(deploy.shards)
            )
        )
        return DeployResult(done=sum(r.done for r in results), failed=sum(r.failed for r in results))
