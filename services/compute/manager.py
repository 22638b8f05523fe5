"""Compute lifecycle: validate a config, write the VM inventory, start workflows, report progress."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence

import grpc
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError

from merak.capacity import MachineRoom
from merak.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from merak.ids import check_id
from merak.logs import get_logger
from merak.temporal import TemporalConnection
from merak.v1 import common_pb2, compute_pb2, network_pb2, network_pb2_grpc, topology_pb2, topology_pb2_grpc
from services.compute import inventory, results
from services.compute.config import ComputeSettings
from services.compute.contracts import CREATE, DELETE, RANDOM, RPS, SEQUENTIAL, UPDATE, DeployInput, Schedule
from services.compute.metrics import ComputeMetrics
from services.compute.plugins import VmPlugin, plugin_type
from services.compute.store import ComputeStore, Meta
from services.compute.workflows import DeployComputeWorkflow

log = get_logger(__name__)

_STATUS_NAMES = {int(v): n for n, v in common_pb2.Status.items()}
_SCHEDULES = {compute_pb2.SEQUENTIAL: SEQUENTIAL, compute_pb2.RPS: RPS, compute_pb2.RANDOM_SCHEDULE: RANDOM}
# Hosts a progress message lists by name (how many there are in all is in hosts_unsettled).
MAX_HOSTS_LISTED = 50


def _new_only(
    planned: dict[str, list[inventory.PlannedVm]], existing: dict[str, set[str]]
) -> dict[str, list[inventory.PlannedVm]]:
    """The planned VMs that do not exist yet (what an UPDATE adds to the machine)."""
    return {
        host: [vm for vm in vms if vm.name not in existing.get(host, set())] for host, vms in planned.items()
    }


def fingerprint(config: compute_pb2.InternalComputeConfiguration) -> str:
    """What makes two requests the same deployment (hosts, VMs, network), not their request ids or states."""
    copy = compute_pb2.InternalComputeConfiguration()
    copy.CopyFrom(config)
    copy.ClearField("request_id")
    copy.ClearField("revision_number")
    copy.ClearField("format_version")
    copy.ClearField("message_type")
    for pod in copy.pods:
        pod.ClearField("status")
        pod.ClearField("operation_type")
    for vpc in copy.vm_deploy.vpcs:
        for subnet in vpc.subnets:  # filled in from the network service; they change as VMs come
            subnet.ClearField("allocated")
            subnet.ClearField("capacity")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


class ComputeManager:
    """Implements ComputeHandler's CREATE / INFO / DELETE and the progress stream."""

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
        self.network = network
        self.settings = settings
        self.metrics = metrics
        # What this machine can still hold, asked before real VMs on it are created.
        self.machine_room = machine_room
        # Which agents the topology service started (None: every endpoint is trusted, for tests
        # that serve compute alone).
        self.topology = topology

    def workflow_id(self, config: compute_pb2.InternalComputeConfiguration, operation: str) -> str:
        """Deterministic per scenario, config and operation: a repeated DEPLOY finds the same workflow."""
        scenario = config.scenario_id or "adhoc"
        return f"merak-compute-{scenario}-{config.compute_config_id}-{operation}"

    # --- CREATE ------------------------------------------------------------------------------

    async def create(
        self, config: compute_pb2.InternalComputeConfiguration
    ) -> compute_pb2.ReturnComputeMessage:
        """Validate, write the inventory, start the deployment; returns at once with the progress."""
        check_id("config.compute_config_id", config.compute_config_id)
        plugin = self._checked_plugin(config)
        hosts = inventory.hosts_from_pods(config.pods)
        if plugin.needs_network_config:
            await self._complete_from_network(config)
        planned = inventory.plan(config, hosts)
        if plugin.needs_network_config:
            await self._check_capacity(config, planned)
        config_id = config.compute_config_id
        if await self.store.exists(config_id):
            stored = await self.store.config(config_id)
            if stored is None or fingerprint(stored) != fingerprint(config):
                raise AlreadyExists(
                    f"compute config {config_id!r} exists with a different configuration; DELETE it first"
                )
            meta = await self.store.meta(config_id)
            counts = await self.store.counts(config_id)
            if meta is not None and (meta.running or counts.get(common_pb2.DONE, 0) == meta.total):
                return await self.info(config_id)  # running, or nothing left to do
            await self.store.start_operation(config_id, CREATE)  # retry what failed
        else:
            inventory.check_machine_room(hosts, planned, self.machine_room())
            await self._check_endpoints(config.pods, hosts)
            await self.store.create(
                config,
                hosts,
                planned,
                hosts_per_shard=self.settings.hosts_per_shard,
                batch_size=self.settings.batch_size,
                plugin=plugin.name,
            )
        await self._start(config, CREATE)
        total = sum(len(v) for v in planned.values())
        log.info(
            "compute_create_started", config_id=config_id, vms=total, hosts=len(hosts), plugin=plugin.name
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
        longer has are deleted, the new ones created, the overlay follows; returns at once."""
        check_id("config.compute_config_id", config.compute_config_id)
        config_id = config.compute_config_id
        stored = await self.store.config(config_id)
        meta = await self.store.meta(config_id)
        if stored is None or meta is None:
            raise NotFound(f"compute config {config_id!r} does not exist; CREATE it first")
        if meta.operation == DELETE:
            raise FailedPrecondition(f"compute config {config_id!r} is being deleted")
        if meta.running:
            raise FailedPrecondition(
                f"compute config {config_id!r} is running its {meta.operation.upper()}: "
                "wait for it, then UPDATE"
            )
        plugin = self._checked_plugin(config)
        if plugin.name != meta.plugin:
            raise InvalidArgument(
                "config.plugin", f"{config.plugin!r}: the config's VMs were made by {meta.plugin}"
            )
        hosts = inventory.hosts_from_pods(config.pods)
        if plugin.needs_network_config:
            await self._complete_from_network(config)
        planned = inventory.plan(config, hosts)
        if fingerprint(stored) == fingerprint(config) and not await self._unfinished(config_id, meta):
            return await self.info(config_id)  # a repeated UPDATE: nothing to do
        await self._check_endpoints(config.pods, hosts)
        existing = await self._existing(config_id)
        new = _new_only(planned, {host: set(vms) for host, vms in existing.items()})
        inventory.check_machine_room(hosts, new, self.machine_room())
        if plugin.needs_network_config:
            # The VMs that go free their addresses (the update deletes them before it creates).
            kept = {(vm.host, vm.name) for vms in planned.values() for vm in vms}
            freed: dict[str, int] = defaultdict(int)
            for host, vms in existing.items():
                for name, subnet in vms.items():
                    if (host, name) not in kept:
                        freed[subnet] += 1
            await self._check_capacity(config, new, freed)
        await self.store.start_operation(config_id, UPDATE)
        try:
            added, dropped, _ = await self.store.update_inventory(
                config, hosts, planned, hosts_per_shard=self.settings.hosts_per_shard
            )
        except BaseException:
            await self.store.finish_operation(config_id, "the UPDATE could not be written")
            raise
        await self._start(config, UPDATE)
        log.info(
            "compute_update_started", config_id=config_id, added=added, deleted=dropped, hosts=len(hosts)
        )
        reply = await self.info(config_id)
        reply.return_message = f"Successfully started the update: {added} VMs to create, {dropped} to delete"
        return reply

    @staticmethod
    def _checked_plugin(config: compute_pb2.InternalComputeConfiguration) -> type[VmPlugin]:
        """The plugin, scheduler, rate and churn of a CREATE or UPDATE must make sense."""
        plugin = plugin_type(config.plugin)
        if plugin.needs_alcor and not config.alcor_url:
            raise InvalidArgument(
                "config.alcor_url",
                "required with the alcor plugin: Alcor's port manager, e.g. http://10.0.0.5:30006 "
                "(a scenario takes it from its service config: aca-cmd -a <ip>, or the alcorIp entry)",
            )
        if config.vm_deploy.scheduler not in _SCHEDULES:
            raise InvalidArgument(
                "config.vm_deploy.scheduler", f"unknown scheduler {int(config.vm_deploy.scheduler)}"
            )
        if config.vm_deploy.scheduler == compute_pb2.RPS and config.rps <= 0:
            raise InvalidArgument("config.rps", "the RPS scheduler needs a target rate above 0")
        for field in ("churn_rate", "churn_seconds"):
            value = getattr(config, field)
            if not 0 <= value <= 1e9:  # NaN fails too
                raise InvalidArgument(f"config.{field}", f"{value!r} is not a rate or a duration")
        return plugin

    async def _unfinished(self, config_id: str, meta: Meta) -> bool:
        """The last operation left work: it failed, VMs are in ERROR, or VMs wait on drop lists."""
        if meta.failure or (await self.store.counts(config_id)).get(common_pb2.ERROR):
            return True
        return any([await self.store.dropped_count(config_id, h) for h in await self.store.hosts(config_id)])

    async def _existing(self, config_id: str) -> dict[str, dict[str, str]]:
        """host -> VM name -> subnet id, of every VM the config has now."""
        return {
            host: {r.name: r.subnet for r in await self.store.vms(config_id, host)}
            for host in await self.store.hosts(config_id)
        }

    async def _check_endpoints(
        self, pods: Sequence[common_pb2.InternalComputeInfo], hosts: Sequence[inventory.Host]
    ) -> None:
        """Refuse an agent endpoint the topology service did not issue: compute would connect to it."""
        if self.topology is None:
            return
        topology_ids = {pod.topology_id for pod in pods}
        try:
            if "" in topology_ids:  # Merak's clients name no topology: any of them
                listed = await self.topology.ListTopologies(topology_pb2.ListTopologiesRequest(), timeout=30)
                topology_ids = {t.topology_id for t in listed.topologies}
            issued: set[str] = set()
            for topology_id in sorted(topology_ids):
                request = topology_pb2.InternalTopologyInfo(
                    operation_type=common_pb2.INFO,
                    config=topology_pb2.InternalTopologyConfiguration(topology_id=topology_id),
                )
                try:
                    reply = await self.topology.TopologyHandler(request, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:
                        continue
                    raise
                issued.update(node.agent_endpoint for node in reply.compute_nodes if node.agent_endpoint)
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"cannot ask the topology service which agents it started: {exc.code().name} {exc.details()}"
            ) from exc
        for i, host in enumerate(hosts):
            if host.agent_endpoint not in issued:
                raise InvalidArgument(
                    f"config.pods[{i}].agent_endpoint",
                    f"{host.agent_endpoint[:200]!r} is not an agent the topology service started",
                )

    async def _complete_from_network(self, config: compute_pb2.InternalComputeConfiguration) -> None:
        """Check the VPCs and subnets against the network config; fill in CIDRs and gateways."""
        if not config.netconfig_id:
            config.netconfig_id = await self._netconfig_of(config)
        request = network_pb2.InternalNetConfigInfo(
            operation_type=common_pb2.INFO,
            config=network_pb2.InternalNetConfigConfiguration(netconfig_id=config.netconfig_id),
        )
        try:
            network = await self.network.NetConfigHandler(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise InvalidArgument(
                    "config.netconfig_id", f"no network config {config.netconfig_id!r}"
                ) from None
            raise Unavailable(f"network service: {exc.code().name}: {exc.details()}") from exc
        known = {vpc.vpc_id: {s.subnet_id: s for s in vpc.subnets} for vpc in network.vpcs}
        for v, vpc in enumerate(config.vm_deploy.vpcs):
            if vpc.vpc_id not in known:
                raise InvalidArgument(
                    f"config.vm_deploy.vpcs[{v}].vpc_id",
                    f"unknown VPC {vpc.vpc_id!r} in network config {config.netconfig_id!r}",
                )
            for s, subnet in enumerate(vpc.subnets):
                found = known[vpc.vpc_id].get(subnet.subnet_id)
                if found is None:
                    raise InvalidArgument(
                        f"config.vm_deploy.vpcs[{v}].subnets[{s}].subnet_id",
                        f"unknown subnet {subnet.subnet_id!r}",
                    )
                subnet.subnet_cidr, subnet.subnet_gw = found.subnet_cidr, found.subnet_gw
                subnet.capacity, subnet.allocated = found.capacity, found.allocated

    async def _netconfig_of(self, config: compute_pb2.InternalComputeConfiguration) -> str:
        """Merak's compute request names VPCs, not a network config: the one that holds them."""
        vpc_ids = [vpc.vpc_id for vpc in config.vm_deploy.vpcs]
        if not any(vpc_ids):
            raise InvalidArgument(
                "config.netconfig_id", "required with the native plugin when no VPC id is given"
            )
        try:
            reply = await self.network.FindNetConfig(
                network_pb2.FindNetConfigRequest(vpc_ids=vpc_ids), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise InvalidArgument("config.vm_deploy.vpcs", exc.details() or exc.code().name) from None
            raise Unavailable(f"network service: {exc.code().name}: {exc.details()}") from exc
        return reply.netconfig_id

    async def _check_capacity(
        self,
        config: compute_pb2.InternalComputeConfiguration,
        planned: dict[str, list[inventory.PlannedVm]],
        freed: dict[str, int] | None = None,
    ) -> None:
        """Each subnet has the addresses the VMs to create need (with those `freed` by VMs that go)."""
        wanted: dict[str, int] = defaultdict(int)
        for vms in planned.values():
            for vm in vms:
                wanted[vm.subnet.subnet_id] += 1
        for v, vpc in enumerate(config.vm_deploy.vpcs):
            for s, subnet in enumerate(vpc.subnets):
                free = subnet.capacity - subnet.allocated + (freed or {}).get(subnet.subnet_id, 0)
                if subnet.capacity and wanted[subnet.subnet_id] > free:
                    raise InvalidArgument(
                        f"config.vm_deploy.vpcs[{v}].subnets[{s}]",
                        f"{wanted[subnet.subnet_id]} VMs asked for, but subnet {subnet.subnet_cidr} "
                        f"has {free} free addresses",
                    )

    async def _start(self, config: compute_pb2.InternalComputeConfiguration, operation: str) -> None:
        meta = await self.store.meta(config.compute_config_id)
        shards = meta.shards if meta else 1
        schedule = Schedule(_SCHEDULES[config.vm_deploy.scheduler], config.rps, int(config.seed))
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
                ),
                id=self.workflow_id(config, operation),
                task_queue=self.settings.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )
        except RPCError as exc:
            await self.store.finish_operation(config.compute_config_id, f"temporal: {exc}")
            raise Unavailable(f"temporal: {exc}") from exc

    # --- INFO and progress -------------------------------------------------------------------

    async def results(self, config_id: str) -> compute_pb2.ComputeResults:
        """Requests, codes, latencies and rates of the control plane's calls; time to VM ready."""
        meta = await self.store.meta(config_id)
        config = await self.store.config(config_id)
        if meta is None or config is None:
            raise NotFound(f"compute config {config_id!r} does not exist")
        raw_calls, ready = await self.store.results(config_id)
        samples = [s for s in (results.parse_call(raw) for raw in raw_calls) if s is not None]
        built = results.build(
            config_id,
            plugin=meta.plugin,
            operation=meta.operation.upper(),
            vms=meta.total,
            requested_rps=config.rps,
            calls=samples,
            ready=ready,
            population=await self.store.population(config_id),
            born=await self.store.born_offsets(config_id),
        )
        built.churned = int((await self.store.churn_state(config_id)).get("replaced", 0))
        built.started_at.FromNanoseconds(int(meta.started_at * 1e9))
        return built

    async def progress(self, config_id: str) -> compute_pb2.ComputeProgress:
        """Counts per status, hosts not finished, first errors."""
        meta = await self.store.meta(config_id)
        if meta is None:
            raise NotFound(f"compute config {config_id!r} does not exist")
        counts = await self.store.counts(config_id)
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
        unsettled, listed = await self.store.unsettled_hosts(config_id, MAX_HOSTS_LISTED)
        progress.hosts_unsettled = unsettled
        for host, per_status in listed.items():
            progress.hosts.add(
                host=host,
                total=sum(per_status.values()),
                done=per_status.get(common_pb2.DONE, 0),
                error=per_status.get(common_pb2.ERROR, 0),
            )
        progress.errors.extend(await self.store.errors(config_id))
        churn = await self.store.churn_state(config_id)
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
        await self.store.start_operation(config_id, DELETE)
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
            meta = await self.store.meta(config_id)
            running += bool(meta and meta.running)
            for status, n in (await self.store.counts(config_id)).items():
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
