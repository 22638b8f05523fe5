"""Topology lifecycle: validate, store, build in the background, report the live state, tear down."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, replace

from merak.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MerakError,
    NotFound,
)
from merak.ids import check_id
from merak.logs import get_logger
from merak.skips import Skips
from merak.v1 import common_pb2, topology_pb2
from services.topology import dataplanes, faults
from services.topology import store as st
from services.topology.backends import BackendRegistry, TopologyBackend, VhostRuntime
from services.topology.backends.impair import DeviceFaults
from services.topology.diff import TopologyDiff, check_update, check_vhosts, diff, merged
from services.topology.generator import generate, spec_from_proto
from services.topology.metrics import TopologyMetrics
from services.topology.models import Topology, TopologySpec, vhost_mac

log = get_logger(__name__)

# How long an UPDATE waits for a build or update of the same lab that is finishing.
_SETTLE_SECONDS = 30.0
_STATUS_NAMES: dict[int, str] = {int(value): name for name, value in common_pb2.Status.items()}


@dataclass
class _Entry:
    """A topology this process knows: its graph (generated once) and its background build."""

    topology: Topology
    task: asyncio.Task[None] | None = None
    # Keeps the agents running once the topology is built (restarts the ones that die).
    supervisor: asyncio.Task[None] | None = None
    # `task` is an UPDATE (its vhosts are UPDATING until it is over; a build's are DEPLOYING).
    updating: bool = False


class TopologyManager:
    """Implements CREATE / INFO / DELETE of topologies over a store and the backends."""

    def __init__(
        self,
        store: st.TopologyStore,
        backends: BackendRegistry,
        metrics: TopologyMetrics,
        default_backend: str = "local",
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.backends = backends
        self.default_backend = default_backend
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, topology_id: str) -> asyncio.Lock:
        return self._locks.setdefault(topology_id, asyncio.Lock())

    # --- CREATE ------------------------------------------------------------------------------

    async def create(
        self, config: topology_pb2.InternalTopologyConfiguration, skips: Skips | None = None
    ) -> topology_pb2.ReturnTopologyMessage:
        """Validate, store and start building; returns the vhosts at once (DEPLOYING). What the config
        asked for and is left out (as Merak left it out), or filled in, is said in `skips`."""
        if not config.backend:
            config.backend = self.default_backend
        spec = spec_from_proto(config, skips)
        backend = self.backends.get(spec.backend)
        backend.check(spec)
        async with self._lock(spec.topology_id):
            existing = await self.store.get(spec.topology_id)
            if existing is not None:
                if spec_from_proto(existing.config) != spec:
                    raise AlreadyExists(
                        f"topology {spec.topology_id!r} exists with a different configuration; "
                        "DELETE it first or use another topology_id"
                    )
                return await self.info(spec.topology_id)
            holder = await self.store.claim_short_id(spec.short_id, spec.topology_id)
            if holder != spec.topology_id:
                raise FailedPrecondition(
                    f"topology ids {spec.topology_id!r} and {holder!r} share the short id {spec.short_id}; "
                    "choose another topology_id"
                )
            # ~5 s for the largest lab: off the event loop, which serves every other request meanwhile.
            topology = await asyncio.to_thread(generate, spec)
            await self.store.create(config, spec.short_id)
            entry = self._entries[spec.topology_id] = _Entry(topology)
            entry.task = asyncio.create_task(self._build(topology, backend), name=f"build-{spec.topology_id}")
        self._update_gauges()
        log.info(
            "topology_create_accepted",
            topology_id=spec.topology_id,
            vhosts=len(topology.vhosts()),
            switches=len(topology.switches()),
            links=len(topology.links),
            backend=spec.backend,
            dataplane=spec.dataplane,
        )
        return await self.info(spec.topology_id)

    async def _build(self, topology: Topology, backend: TopologyBackend) -> None:
        spec = topology.spec
        started = time.perf_counter()

        async def on_ready(_vhosts: list[str]) -> None:
            return None  # readiness is read live by INFO; nothing to record per vhost

        if await self._settle(topology, backend, backend.deploy(topology, on_ready), "topology_build_failed"):
            self.metrics.build_seconds.labels(spec.backend, spec.dataplane).observe(
                time.perf_counter() - started
            )

    async def _settle(
        self, topology: Topology, backend: TopologyBackend, work: Awaitable[None], failed: str
    ) -> bool:
        """Run a build or update of the lab and record how it ended: READY (then supervised) or ERROR
        with the reason (logged as `failed`). Whether it succeeded."""
        topology_id = topology.spec.topology_id
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = exc.message if isinstance(exc, MerakError) else f"{type(exc).__name__}: {exc}"
            log.exception(failed, topology_id=topology_id)
            await self.store.set_status(topology_id, st.ERROR, built=True, error=message)
            return False
        await self.store.set_status(topology_id, st.READY, built=True)
        self._update_gauges()
        self._supervise(topology, backend)
        return True

    def _supervise(self, topology: Topology, backend: TopologyBackend) -> None:
        entry = self._entries.get(topology.spec.topology_id)
        if entry is not None and (entry.supervisor is None or entry.supervisor.done()):
            entry.supervisor = asyncio.create_task(
                backend.supervise(topology), name=f"supervise-{topology.spec.topology_id}"
            )

    async def resume(self) -> None:
        """After a restart: finish deployments that were in progress (deploy is idempotent)."""
        for topology_id in await self.store.ids():
            record = await self.store.get(topology_id)
            if record is None:
                continue
            entry = await self._entry(record)
            backend = self.backends.get(entry.topology.spec.backend)
            previous = await self.store.previous_config(topology_id)
            if record.status == st.DEPLOYING and previous is not None:
                # An UPDATE that was under way: redone from the lab it started from (each step is
                # idempotent), so what had to go goes too.
                old = await asyncio.to_thread(generate, spec_from_proto(previous))
                entry.updating = True
                entry.task = asyncio.create_task(
                    self._update(old, entry.topology, diff(old, entry.topology), backend)
                )
                log.info("topology_update_resumed", topology_id=topology_id)
            elif record.status == st.DEPLOYING:
                entry.task = asyncio.create_task(self._build(entry.topology, backend))
                log.info("topology_build_resumed", topology_id=topology_id)
            elif record.built and record.status == st.READY:
                self._supervise(entry.topology, backend)
        self._update_gauges()

    # --- INFO --------------------------------------------------------------------------------

    async def _record(self, topology_id: str) -> st.TopologyRecord:
        check_id("config.topology_id", topology_id)
        record = await self.store.get(topology_id)
        if record is None:
            raise NotFound(f"topology {topology_id!r} does not exist")
        return record

    async def _entry(self, record: st.TopologyRecord) -> _Entry:
        entry = self._entries.get(record.topology_id)
        if entry is None:
            # Generating is pure and deterministic: the stored config gives back the same graph.
            topology = await asyncio.to_thread(generate, spec_from_proto(record.config))
            entry = self._entries.setdefault(record.topology_id, _Entry(topology))
        return entry

    async def info(self, topology_id: str) -> topology_pb2.ReturnTopologyMessage:
        """The compute nodes and hosts of a topology, as they are now."""
        record = await self._record(topology_id)
        entry = await self._entry(record)
        spec = entry.topology.spec
        backend = self.backends.get(spec.backend)
        runtime = await backend.inspect(entry.topology, built=record.built)
        if entry.task is not None and not entry.task.done():
            # No vhost is READY before the build or update that runs has recorded its end: an agent
            # that answers may still be one the build finds dead.
            status, said = (
                (common_pb2.UPDATING, "the topology is being updated")
                if entry.updating
                else (common_pb2.DEPLOYING, "the topology is being built")
            )
            runtime = {
                name: replace(state, status=status, detail=said)
                if state.status == common_pb2.READY
                else state
                for name, state in runtime.items()
            }
        reply = topology_pb2.ReturnTopologyMessage(return_code=common_pb2.OK)
        reply.compute_nodes.extend(_compute_nodes(entry.topology, runtime))
        reply.hosts.extend(
            common_pb2.InternalHostInfo(ip=h.ip, status=h.status, name=h.name) for h in backend.hosts()
        )
        names = [vhost.name for vhost in entry.topology.vhosts()]
        reply.return_message = (
            f"CHECK success. {state_message(spec.dataplane, record.status, names, runtime)}"
        )
        if record.error:
            reply.return_message += f"; error: {record.error}"
        return reply

    async def list(self) -> topology_pb2.ListTopologiesReply:
        """Every stored topology and where it stands."""
        reply = topology_pb2.ListTopologiesReply()
        for topology_id in await self.store.ids():
            record = await self.store.get(topology_id)
            if record is None:
                continue
            config = record.config
            reply.topologies.add(
                topology_id=topology_id,
                name=config.name,
                status=record.status,
                number_of_vhosts=config.number_of_vhosts
                or sum(1 for v in config.vnodes if v.type == topology_pb2.VHOST),
                backend=config.backend or "local",
                dataplane=config.dataplane or dataplanes.DEFAULT.name,
                error=record.error,
            )
        return reply

    # --- DELETE ------------------------------------------------------------------------------

    async def delete(self, topology_id: str) -> topology_pb2.ReturnTopologyMessage:
        """Remove everything the topology made; returns when it is gone."""
        async with self._lock(topology_id):
            record = await self._record(topology_id)
            entry = await self._entry(record)
            spec = entry.topology.spec
            await self.store.set_status(topology_id, st.DELETING)
            for task in (entry.task, entry.supervisor):  # the supervisor would restart the agents
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            report = await self.backends.get(spec.backend).destroy(spec)
            await self.store.delete(topology_id, spec.short_id)
            self._entries.pop(topology_id, None)
        self._locks.pop(topology_id, None)
        self._update_gauges()
        reply = topology_pb2.ReturnTopologyMessage(
            return_code=common_pb2.OK,
            return_message=(
                f"DELETE success: {report.namespaces} namespaces and {report.processes} agents removed"
                + (f"; {report.left_sentence()}" if report.left else "")
                + (f"; logs kept in {report.logs}" if report.logs else "")
            ),
        )
        for vhost in entry.topology.vhosts():
            reply.compute_nodes.add(
                operation_type=common_pb2.DELETE, id=_vhost_id(spec, vhost.name), name=vhost.name,
                status=common_pb2.DELETING,
            )  # fmt: skip
        return reply

    # --- faults ------------------------------------------------------------------------------

    async def set_faults(self, request: topology_pb2.SetFaultsRequest) -> topology_pb2.FaultsReply:
        """Make the lab suffer exactly what `request` lists; what it leaves out is healed."""
        record = await self._record(request.topology_id)
        entry = await self._entry(record)
        spec = entry.topology.spec
        wanted = faults.plan(entry.topology, request)  # bad input first, whatever the lab's state
        hosts = faults.host_plan(entry.topology, request)
        processes = faults.process_plan(entry.topology, request)
        if request.links or request.partitions:
            spec.plane.check_impairable()
        if not record.built or record.status != st.READY:
            raise FailedPrecondition(
                f"topology {spec.topology_id!r} is {record.status}, not READY: wait for it"
            )
        backend = self.backends.get(spec.backend)
        if request.validate_only:
            await backend.check_faults(spec, wanted, hosts)
            if processes and type(backend).apply_process_faults is TopologyBackend.apply_process_faults:
                await backend.apply_process_faults(entry.topology, processes)  # says it cannot
            return await self.list_faults(spec.topology_id)
        async with self._lock(spec.topology_id):
            record = await self._record(spec.topology_id)  # an UPDATE may have run meanwhile
            if record.status != st.READY or entry.topology.spec != spec:
                raise FailedPrecondition(
                    f"topology {spec.topology_id!r} changed while the faults waited: set them again"
                )
            before = faults.plan(entry.topology, await self.store.faults(spec.topology_id))
            healed = {node: dict.fromkeys(devices, DeviceFaults()) for node, devices in before.items()}
            for node, devices in wanted.items():
                healed.setdefault(node, {}).update(devices)
            await backend.apply_faults(spec, healed)
            await backend.apply_host_faults(entry.topology, hosts)
            await backend.apply_process_faults(entry.topology, processes)
            stored = topology_pb2.SetFaultsRequest(topology_id=spec.topology_id)
            stored.links.extend(request.links)
            stored.partitions.extend(request.partitions)
            stored.hosts.extend(h for h in request.hosts if h.state != topology_pb2.HOST_RUNNING)
            stored.processes.extend(p for p in request.processes if p.state != topology_pb2.HOST_RUNNING)
            await self.store.set_faults(stored)
        log.info(
            "topology_faults_set",
            topology_id=spec.topology_id,
            links=len(request.links),
            partitions=len(request.partitions),
            devices=sum(len(d) for d in wanted.values()),
            hosts=len(hosts),
            processes=len(processes),
        )
        return await self.list_faults(spec.topology_id)

    async def process_stats(self, topology_id: str, since: float) -> topology_pb2.ProcessStatsReply:
        """CPU and memory of the lab's control-plane processes from `since` (unix seconds) on."""
        if not math.isfinite(since) or since < 0:
            raise InvalidArgument("since", f"{since!r} is not a time (unix seconds, 0 or more)")
        record = await self._record(topology_id)
        entry = await self._entry(record)
        return await self.backends.get(entry.topology.spec.backend).process_stats(entry.topology, since)

    async def list_faults(self, topology_id: str) -> topology_pb2.FaultsReply:
        """The impairments the lab suffers now."""
        await self._record(topology_id)
        stored = await self.store.faults(topology_id)
        return topology_pb2.FaultsReply(
            topology_id=topology_id,
            links=list(stored.links),
            partitions=list(stored.partitions),
            hosts=list(stored.hosts),
            processes=list(stored.processes),
        )

    async def update(
        self, config: topology_pb2.InternalTopologyConfiguration, skips: Skips | None = None
    ) -> topology_pb2.ReturnTopologyMessage:
        """Reconcile a READY lab to a new config (more or fewer vhosts, racks, links): what goes is
        removed, what comes is built in the background, the rest is not touched; returns at once."""
        if not config.backend:
            config.backend = self.default_backend
        spec = spec_from_proto(config, skips)
        backend = self.backends.get(spec.backend)
        async with self._lock(spec.topology_id):
            record = await self._record(spec.topology_id)
            entry = await self._entry(record)
            if entry.task is not None and not entry.task.done():
                # A build or update of this lab is finishing: wait a little for it to record its end.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(entry.task), _SETTLE_SECONDS)
                record = await self._record(spec.topology_id)
            # An UPDATE that failed (ERROR, the config it started from kept) may be tried again: from
            # that config, since the lab is somewhere between the two (every step is idempotent).
            previous = (
                await self.store.previous_config(spec.topology_id) if record.status == st.ERROR else None
            )
            old = entry.topology
            if previous is not None:
                old = await asyncio.to_thread(generate, spec_from_proto(previous))
            check_update(old.spec, spec)
            if spec == old.spec and previous is None:
                return await self.info(spec.topology_id)  # a repeated UPDATE: nothing to do
            if previous is None and (not record.built or record.status != st.READY):
                raise FailedPrecondition(
                    f"topology {spec.topology_id!r} is {record.status}, not READY: wait for it, then UPDATE"
                )
            stored = await self.store.faults(spec.topology_id)
            if stored.links or stored.partitions or stored.hosts or stored.processes:
                raise FailedPrecondition(
                    f"topology {spec.topology_id!r} has faults set; clear them (ClearFaults) before an UPDATE"
                )
            backend.check(spec)
            new = await asyncio.to_thread(generate, spec)
            check_vhosts(old, new)
            change = diff(old, new)
            if previous is not None:  # the lab may hold some of the failed target too
                change = merged(change, diff(entry.topology, new))
            await backend.check_update(old, new, change)
            if entry.supervisor is not None and not entry.supervisor.done():
                entry.supervisor.cancel()  # it would restart agents of the old grouping
                await asyncio.gather(entry.supervisor, return_exceptions=True)
            await self.store.replace_config(config, previous or record.config)
            entry.topology = new
            entry.updating = True
            entry.task = asyncio.create_task(
                self._update(old, new, change, backend), name=f"update-{spec.topology_id}"
            )
        log.info("topology_update_accepted", topology_id=spec.topology_id, change=change.summary())
        reply = await self.info(spec.topology_id)
        reply.return_message = f"UPDATE started: {change.summary()}. {reply.return_message}"
        return reply

    async def _update(
        self, old: Topology, new: Topology, change: TopologyDiff, backend: TopologyBackend
    ) -> None:
        if await self._settle(new, backend, backend.update(old, new, change), "topology_update_failed"):
            await self.store.forget_previous(new.spec.topology_id)

    async def close(self) -> None:
        """Stop background builds (deployments resume after a restart); topologies keep running."""
        tasks = [
            task
            for e in self._entries.values()
            for task in (e.task, e.supervisor)
            if task is not None and not task.done()
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _update_gauges(self) -> None:
        # Only a plane that builds namespaces makes them, and the links between them.
        built = [e.topology for e in self._entries.values() if e.topology.spec.plane.builds_namespaces]
        nodes = sum(len(topology.nodes) for topology in built)
        links = sum(len(topology.links) for topology in built)
        self.metrics.namespaces.set(nodes)
        self.metrics.links.set(links)
        running = sum(1 for e in self._entries.values() if e.task is not None and not e.task.done())
        self.metrics.topologies.labels("deploying").set(running)
        self.metrics.topologies.labels("deployed").set(len(self._entries) - running)


def _vhost_id(spec: TopologySpec, name: str) -> str:
    """A stable id per vhost (Merak used the pod UID)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"merak:{spec.topology_id}:{name}"))


def _compute_nodes(
    topology: Topology, runtime: dict[str, VhostRuntime]
) -> list[common_pb2.InternalComputeInfo]:
    spec = topology.spec
    nodes = []
    for index, vhost in enumerate(topology.vhosts()):
        state = runtime.get(vhost.name, VhostRuntime(status=common_pb2.NONE))
        nic = vhost.nics[0] if vhost.nics else None
        ip, _, prefix = (nic.ip if nic else "").partition("/")
        nodes.append(
            common_pb2.InternalComputeInfo(
                operation_type=common_pb2.INFO,
                id=_vhost_id(spec, vhost.name),
                name=vhost.name,
                datapath_ip=ip,
                mac=vhost_mac(spec.short_id, index),
                veth=nic.name if nic else "",
                container_ip=state.container_ip or ip,
                status=state.status,
                hostname=state.hostname,
                agent_endpoint=state.agent_endpoint,
                dataplane=spec.dataplane,
                backend=spec.backend,
                topology_id=spec.topology_id,
                datapath_prefix_len=int(prefix or 0),
                status_detail=state.detail,
            )
        )
    return nodes


SHOWN_NOT_READY = 5


def state_message(dataplane: str, status: str, names: Sequence[str], runtime: dict[str, VhostRuntime]) -> str:
    """Where the topology stands, e.g. "real topology READY; READY: 5". It never says READY while a
    vhost is not: then it names the vhosts that are not (the first few, with their statuses; the
    reasons are in each node's status_detail) and counts the ready ones in lower case."""
    states = [runtime.get(name, VhostRuntime(status=common_pb2.NONE)) for name in names]
    counts = _count(states)
    lagging = [
        f"{name} {_STATUS_NAMES.get(int(state.status), 'NONE')}"
        for name, state in zip(names, states, strict=True)
        if state.status != common_pb2.READY
    ]
    if not lagging:
        summary = ", ".join(f"{name}: {n}" for name, n in counts.items() if n)
        return f"{dataplane} topology {status}; {summary}"
    shown = ", ".join(lagging[:SHOWN_NOT_READY])
    if len(lagging) > SHOWN_NOT_READY:
        shown += f" and {len(lagging) - SHOWN_NOT_READY} more"
    ready = counts.pop("READY")
    parts = [f"{name}: {n}" for name, n in counts.items() if n]
    if ready:
        parts.append(f"ready: {ready}")
    summary = ", ".join(parts)
    # A lab whose build ended well but whose hosts are not all up is "built", not READY.
    said = "built" if status == st.READY else status
    return (
        f"{dataplane} topology {said}, {len(lagging)} of {len(names)} vhosts not ready ({shown}); {summary}"
    )


def _count(states: Iterable[VhostRuntime]) -> dict[str, int]:
    """Merak's summary counts: DONE, READY, DEPLOYING, DELETING, ERROR, Others."""
    counts = dict.fromkeys(("DONE", "READY", "DEPLOYING", "DELETING", "ERROR"), 0)
    others = 0
    for state in states:
        name = _STATUS_NAMES.get(int(state.status), "NONE")
        if name in counts:
            counts[name] += 1
        else:
            others += 1
    counts["Others"] = others
    return counts
