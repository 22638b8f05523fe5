"""Compute lifecycle: take a config (a repeat answers at once), write the VM inventory, start the
workflows, report progress and results."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from merak.capacity import MachineRoom
from merak.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from merak.ids import check_id
from merak.logs import get_logger
from merak.temporal import TemporalConnection
from merak.v1 import common_pb2, compute_pb2, network_pb2_grpc, topology_pb2_grpc
from services.compute import inventory, results
from services.compute.admission import SCHEDULES, Admission, check_capacity, checked_plugin, fingerprint
from services.compute.config import ComputeSettings
from services.compute.contracts import CREATE, DELETE, UPDATE, DeployInput, PluginName, Schedule
from services.compute.metrics import ComputeMetrics
from services.compute.store import ComputeStore, Meta
from services.compute.workflows import DeployComputeWorkflow

log = get_logger(__name__)

_STATUS_NAMES = {int(v): n for n, v in common_pb2.Status.items()}
# Hosts a progress message lists by name (how many there are in all is in hosts_unsettled).
MAX_HOSTS_LISTED = 50


def _new_only(
    planned: dict[str, list[inventory.PlannedVm]], existing: dict[str, set[str]]
) -> dict[str, list[inventory.PlannedVm]]:
    """The planned VMs that do not exist yet (what an UPDATE adds to the machine)."""
    return {
        host: [vm for vm in vms if vm.name not in existing.get(host, set())] for host, vms in planned.items()
    }


def _counted(
    config: compute_pb2.InternalComputeConfiguration, hosts: list[inventory.Host], subnet_room: bool
) -> inventory.Counts:
    """The VMs per host and subnet, checked (with `subnet_room`, against the subnets' free addresses)
    before any VM is built."""
    counts = inventory.count(config, hosts)
    if subnet_room:
        check_capacity(config, counts)
    return counts


class ComputeManager:
    """Implements ComputeHandler's CREATE / UPDATE / INFO / DELETE, the progress stream and the results."""

    def __init__(
        self,
        store: ComputeStore,
        temporal: TemporalConnection,
        network: network_pb2_grpc.MerakNetworkServiceAsyncStub,
        settings: ComputeSettings,
        metrics: ComputeMetrics,
        *,
        topology: topology_pb2_grpc.MerakTopologyServiceAsyncStub | None = None,
        machine_room: Callable[[], MachineRoom | None] = MachineRoom.now,
    ) -> None:
        self.store = store
        self.temporal = temporal
        self.settings = settings
        self.metrics = metrics
        # What this machine can still hold, asked before real VMs on it are created.
        self.machine_room = machine_room
        # The checks that ask the network service and the topology service (None: every agent
        # endpoint is trusted, for tests that serve compute alone).
        self.admission = Admission(network, topology)
        # The Alcors a config may name (MERAK_CONTROL_PLANE_ALLOW).
        self.control_plane = settings.control_plane()

    def workflow_id(self, config: compute_pb2.InternalComputeConfiguration, operation: str) -> str:
        """Deterministic per scenario, config and operation: a repeated DEPLOY finds the same workflow."""
        scenario = config.scenario_id or "adhoc"
        return f"merak-compute-{scenario}-{config.compute_config_id}-{operation}"

    # --- CREATE ------------------------------------------------------------------------------

    async def create(
        self, config: compute_pb2.InternalComputeConfiguration
    ) -> compute_pb2.ReturnComputeMessage:
        """Validate, write the inventory, start the deployment; returns at once with the progress.

        A repeat of the request that made the stored config, while it runs or once every VM is done,
        is known by its fingerprint before the network service is asked anything or a VM is planned:
        it answers from the store. A repeat with work left (it failed) takes the whole path again, so
        the network config and the capacity are checked before anything is retried."""
        check_id("config.compute_config_id", config.compute_config_id)
        plugin = checked_plugin(config, self.control_plane)
        config_id = config.compute_config_id
        asked = fingerprint(config)  # of the request as it came, before the network service completes it
        if await self.store.request_fingerprint(config_id) == asked:
            meta = await self.store.progress.meta(config_id)
            if await self._settled(config_id, meta):
                return await self.info(config_id)
        hosts = inventory.hosts_from_pods(config.pods)
        routed = False  # a network config with per-host address blocks: the overlay is routed by block
        if plugin.needs_network_config:
            routed = bool(await self.admission.complete_from_network(config))
        # Counts first (the subnets' room is checked on them), the VMs once every check passed; all
        # of it off the event loop, which one request's planning must not hold.
        counts = await asyncio.to_thread(_counted, config, hosts, plugin.needs_network_config)
        if await self.store.exists(config_id):
            stored = await self.store.config(config_id)
            if stored is None or fingerprint(stored) != fingerprint(config):
                raise AlreadyExists(
                    f"compute config {config_id!r} exists with a different configuration; DELETE it first"
                )
            return await self._create_again(config, plugin.name)  # the same deployment, asked differently
        await asyncio.to_thread(self._check_room, hosts, counts, plugin.runs_chassis, routed)
        await self.admission.check_endpoints(config.pods, hosts)
        # The hosts with their counts: each shard's first activity writes its VMs (planning in the
        # workflow, a shard at a time), so this call answers in a moment at any size.
        await self.store.vms.create(
            config,
            hosts,
            counts,
            request_fingerprint=asked,
            hosts_per_shard=self.settings.hosts_per_shard,
            batch_size=self.settings.batch_size,
            plugin=plugin.name,
        )
        return await self._start_create(
            config, sum(sum(per.values()) for per in counts.values()), plugin.name
        )

    async def _settled(self, config_id: str, meta: Meta | None) -> bool:
        """Whether a repeat of the stored config is answered with its progress: it runs, or every VM
        is done (otherwise what failed is tried again)."""
        if meta is None:
            return False
        return (
            meta.running
            or (await self.store.progress.counts(config_id)).get(common_pb2.DONE, 0) == meta.total
        )

    async def _create_again(
        self, config: compute_pb2.InternalComputeConfiguration, plugin: str
    ) -> compute_pb2.ReturnComputeMessage:
        """A CREATE of the config compute has (checked against the network service): its progress
        while it runs or once every VM is done; otherwise what failed is tried again."""
        config_id = config.compute_config_id
        meta = await self.store.progress.meta(config_id)
        if await self._settled(config_id, meta):
            return await self.info(config_id)
        await self.store.progress.start(config_id, CREATE)
        return await self._start_create(config, meta.total if meta else 0, plugin)

    async def _start_create(
        self, config: compute_pb2.InternalComputeConfiguration, total: int, plugin: str
    ) -> compute_pb2.ReturnComputeMessage:
        """Start the CREATE workflow; the reply says how many VMs it deploys."""
        await self._start(config, CREATE)
        config_id = config.compute_config_id
        log.info(
            "compute_create_started", config_id=config_id, vms=total, hosts=len(config.pods), plugin=plugin
        )
        reply = await self.info(config_id)
        reply.return_message = "Successfully started all create workflows!"
        reply.vms[0].id = f"Started deployment for {total} VMs"
        return reply

    # --- UPDATE ------------------------------------------------------------------------------

    async def update(
        self, config: compute_pb2.InternalComputeConfiguration
    ) -> compute_pb2.ReturnComputeMessage:
        """A running config changes (more or fewer hosts, VMs per host or subnet): the VMs it no
        longer has are deleted, the new ones created, the overlay follows; returns at once. A repeat
        with nothing left to do answers before the network service is asked or a VM is planned."""
        check_id("config.compute_config_id", config.compute_config_id)
        config_id = config.compute_config_id
        stored = await self.store.config(config_id)
        meta = await self.store.progress.meta(config_id)
        if stored is None or meta is None:
            raise NotFound(f"compute config {config_id!r} does not exist; CREATE it first")
        if meta.operation == DELETE:
            raise FailedPrecondition(f"compute config {config_id!r} is being deleted")
        if meta.running:
            raise FailedPrecondition(
                f"compute config {config_id!r} is running its {meta.operation.upper()}: "
                "wait for it, then UPDATE"
            )
        plugin = checked_plugin(config, self.control_plane)
        if plugin.name != meta.plugin:
            raise InvalidArgument(
                "config.plugin", f"{config.plugin!r}: the config's VMs were made by {meta.plugin}"
            )
        asked = fingerprint(config)  # of the request as it came, before the network service completes it
        repeat = await self.store.request_fingerprint(config_id) == asked
        if repeat and not await self._unfinished(config_id, meta):
            return await self.info(config_id)  # a repeated UPDATE: nothing to do
        hosts = inventory.hosts_from_pods(config.pods)
        routed = False
        if plugin.needs_network_config:
            routed = bool(await self.admission.complete_from_network(config))
        planned = await asyncio.to_thread(inventory.plan, config, hosts)  # off the event loop
        if (
            not repeat
            and fingerprint(stored) == fingerprint(config)
            and not await self._unfinished(config_id, meta)
        ):
            return await self.info(config_id)  # the same config, asked differently: nothing to do
        await self.admission.check_endpoints(config.pods, hosts)
        # A CREATE that failed before its shards wrote their VMs leaves hosts with pending counts.
        await self.store.vms.place_pending(config_id, list(await self.store.vms.hosts(config_id)))
        existing = await self._existing(config_id)
        await asyncio.to_thread(
            self._check_update,
            config,
            hosts,
            planned,
            existing,
            subnet_room=plugin.needs_network_config,
            chassis=plugin.runs_chassis,
            routed=routed,
        )
        await self.store.progress.start(config_id, UPDATE)
        try:
            added, dropped, _ = await self.store.vms.update(
                config,
                hosts,
                planned,
                request_fingerprint=asked,
                hosts_per_shard=self.settings.hosts_per_shard,
            )
        except BaseException:
            await self.store.progress.finish(config_id, "the UPDATE could not be written")
            raise
        await self._start(config, UPDATE)
        log.info(
            "compute_update_started", config_id=config_id, added=added, deleted=dropped, hosts=len(hosts)
        )
        reply = await self.info(config_id)
        reply.return_message = f"Successfully started the update: {added} VMs to create, {dropped} to delete"
        return reply

    def _check_room(
        self, hosts: list[inventory.Host], counts: inventory.Counts, chassis: bool, routed: bool = False
    ) -> None:
        """This machine can hold the VMs to create (and, under ovn, the chassis): in a thread."""
        inventory.check_machine_room(hosts, counts, self.machine_room(), chassis=chassis, routed=routed)

    def _check_update(
        self,
        config: compute_pb2.InternalComputeConfiguration,
        hosts: list[inventory.Host],
        planned: dict[str, list[inventory.PlannedVm]],
        existing: dict[str, dict[str, str]],
        *,
        subnet_room: bool,
        chassis: bool,
        routed: bool = False,
    ) -> None:
        """An UPDATE's new VMs fit on this machine and, with `subnet_room`, in their subnets (with
        the addresses of the VMs that go): O(VMs), so in a thread."""
        new = inventory.counted(_new_only(planned, {host: set(vms) for host, vms in existing.items()}))
        self._check_room(hosts, new, chassis, routed)
        if subnet_room:
            # The VMs that go free their addresses (the update deletes them before it creates).
            kept = {(vm.host, vm.name) for vms in planned.values() for vm in vms}
            freed: dict[str, int] = defaultdict(int)
            for host, vms in existing.items():
                for name, subnet in vms.items():
                    if (host, name) not in kept:
                        freed[subnet] += 1
            check_capacity(config, new, freed)

    async def _unfinished(self, config_id: str, meta: Meta) -> bool:
        """The last operation left work: it failed, VMs are in ERROR, or VMs wait on drop lists."""
        if meta.failure or (await self.store.progress.counts(config_id)).get(common_pb2.ERROR):
            return True
        return any(
            [await self.store.vms.dropped_count(config_id, h) for h in await self.store.vms.hosts(config_id)]
        )

    async def _existing(self, config_id: str) -> dict[str, dict[str, str]]:
        """host -> VM name -> subnet id, of every VM the config has now."""
        return {
            host: {r.name: r.subnet for r in await self.store.vms.records(config_id, host)}
            for host in await self.store.vms.hosts(config_id)
        }

    async def _start(self, config: compute_pb2.InternalComputeConfiguration, operation: str) -> None:
        meta = await self.store.progress.meta(config.compute_config_id)
        shards = meta.shards if meta else 1
        schedule = Schedule(SCHEDULES[config.vm_deploy.scheduler], config.rps, int(config.seed))
        client = await self.temporal.client()
        try:
            await client.start_workflow(
                DeployComputeWorkflow.run,
                DeployInput(
                    config.compute_config_id,
                    operation,
                    shards,
                    schedule,
                    churn_rate=config.churn_rate if operation != DELETE else 0.0,
                    churn_seconds=config.churn_seconds if operation != DELETE else 0.0,
                    program_overlay=config.plugin != PluginName.ALCOR or config.alcor_own_overlay,
                ),
                id=self.workflow_id(config, operation),
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        except RPCError as exc:
            await self.store.progress.finish(config.compute_config_id, f"temporal: {exc}")
            raise Unavailable(f"temporal: {exc}") from exc

    # --- INFO and progress -------------------------------------------------------------------

    async def results(self, config_id: str) -> compute_pb2.ComputeResults:
        """Requests, codes, latencies and rates of the control plane's calls; time to VM ready: from the
        store's running aggregates and histograms, the percentiles from its samples (bounded)."""
        meta = await self.store.progress.meta(config_id)
        config = await self.store.config(config_id)
        if meta is None or config is None:
            raise NotFound(f"compute config {config_id!r} does not exist")
        raw_calls, ready = await self.store.results.calls_and_ready(config_id)
        samples = [s for s in (results.parse_call(raw) for raw in raw_calls) if s is not None]
        histograms, ready_histogram = await self.store.results.histograms(config_id)
        aggregates = await self.store.results.aggregates(config_id)
        built = results.build(
            config_id,
            plugin=meta.plugin,
            operation=meta.operation.upper(),
            vms=meta.total,
            requested_rps=config.rps,
            calls=samples,
            ready=ready,
            population=await self.store.results.population(config_id),
            born=await self.store.results.born_offsets(config_id),
            histograms=histograms,
            ready_histogram=ready_histogram,
            aggregates=aggregates,
        )
        built.churned = int((await self.store.churn.state(config_id)).get("replaced", 0))
        built.overlay_source = overlay_source(meta)
        built.started_at.FromNanoseconds(int(meta.started_at * 1e9))
        return built

    async def progress(self, config_id: str) -> compute_pb2.ComputeProgress:
        """Counts per status, hosts not finished, first errors."""
        meta = await self.store.progress.meta(config_id)
        if meta is None:
            raise NotFound(f"compute config {config_id!r} does not exist")
        counts = await self.store.progress.counts(config_id)
        progress = compute_pb2.ComputeProgress(
            compute_config_id=config_id,
            operation=meta.operation.upper(),
            total=meta.total,
            none=counts.get(common_pb2.NONE, 0),
            deploying=counts.get(common_pb2.DEPLOYING, 0),
            ready=counts.get(common_pb2.READY, 0),
            deleting=counts.get(common_pb2.DELETING, 0),
            updating=counts.get(common_pb2.UPDATING, 0),
            error=counts.get(common_pb2.ERROR, 0),
            done=counts.get(common_pb2.DONE, 0),
            finished=not meta.running,
            failure=meta.failure,
            elapsed_seconds=round((meta.finished_at or time.time()) - meta.started_at, 3),
        )
        unsettled, listed = await self.store.progress.unsettled_hosts(config_id, MAX_HOSTS_LISTED)
        progress.hosts_unsettled = unsettled
        for host, per_status in listed.items():
            progress.hosts.add(
                host=host,
                total=sum(per_status.values()),
                done=per_status.get(common_pb2.DONE, 0),
                error=per_status.get(common_pb2.ERROR, 0),
            )
        progress.errors.extend(await self.store.progress.errors(config_id))
        churn = await self.store.churn.state(config_id)
        if churn:
            progress.churned = int(churn.get("replaced", 0))
            progress.churning = churn.get("running") == "1"
        return progress

    async def info(self, config_id: str) -> compute_pb2.ReturnComputeMessage:
        """Merak's reply ("<done> out of <total> done!") plus the structured progress."""
        check_id("config.compute_config_id", config_id)
        progress = await self.progress(config_id)
        reply = compute_pb2.ReturnComputeMessage(return_code=common_pb2.OK, return_message="Success!")
        reply.vms.add(id=f"{progress.done} out of {progress.total} done!")
        reply.progress.CopyFrom(progress)
        return reply

    async def watch(
        self, config_id: str, interval: float = 0.2
    ) -> AsyncIterator[compute_pb2.ComputeProgress]:
        """Progress on every change, until the operation is over (or the config is deleted)."""
        last = b""
        while True:
            try:
                progress = await self.progress(config_id)
            except NotFound:
                if last:  # deleted while watching: the delete is over
                    yield compute_pb2.ComputeProgress(
                        compute_config_id=config_id, operation="DELETE", finished=True
                    )
                    return
                raise
            progress.elapsed_seconds = 0  # changes every time; not a change worth a message
            encoded = progress.SerializeToString(deterministic=True)
            if encoded != last:
                last = encoded
                yield progress
            if progress.finished:
                return
            await asyncio.sleep(interval)

    # --- DELETE ------------------------------------------------------------------------------

    async def delete(self, config_id: str) -> compute_pb2.ReturnComputeMessage:
        """Stop a running create, then delete every VM, address and record; returns at once."""
        check_id("config.compute_config_id", config_id)
        config = await self.store.config(config_id)
        if config is None:
            reply = compute_pb2.ReturnComputeMessage(
                return_code=common_pb2.OK, return_message="Nothing to delete"
            )
            reply.vms.add(id="0 out of 0 done!")
            return reply
        client = await self.temporal.client()
        for operation in (CREATE, UPDATE):
            running = client.get_workflow_handle(self.workflow_id(config, operation))
            try:
                described = await running.describe()
                if described.status == WorkflowExecutionStatus.RUNNING:
                    await running.cancel()
                    await running.result()
            except RPCError:
                pass  # never started, or already gone
            except Exception:
                log.info("compute_operation_cancelled", config_id=config_id, operation=operation)
        await self.store.progress.start(config_id, DELETE)
        await self._start(config, DELETE)
        log.info("compute_delete_started", config_id=config_id)
        reply = await self.info(config_id)
        reply.return_message = "Successfully started all delete workflows!"
        return reply

    async def refresh_gauges(self) -> None:
        """Operations running and VMs by status, over every compute config (Prometheus gauges)."""
        running = 0
        totals: dict[int, int] = defaultdict(int)
        for config_id in await self.store.ids():
            meta = await self.store.progress.meta(config_id)
            running += bool(meta and meta.running)
            for status, n in (await self.store.progress.counts(config_id)).items():
                totals[status] += n
        self.metrics.operations_running.set(running)
        for status, name in _STATUS_NAMES.items():
            self.metrics.vms_by_status.labels(name).set(totals.get(status, 0))

    async def refresh_gauges_forever(self, interval: float = 5.0) -> None:
        """Keep the gauges current while the service runs."""
        while True:
            try:
                await self.refresh_gauges()
            except Exception:  # a metrics refresh must never stop the service
                log.warning("compute_gauges_refresh_failed", exc_info=True)
            await asyncio.sleep(interval)


def overlay_source(meta: Meta) -> str:
    """Where a config's VMs' overlay comes from, as the results say it."""
    if meta.plugin == PluginName.ALCOR:
        return "merak push" if meta.alcor_own_overlay else "alcor goal states"
    return "ovn" if meta.plugin == PluginName.OVN else "merak push"
