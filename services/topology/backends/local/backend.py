"""The local backend as a TopologyBackend: plans a topology's agents, builds its kernel part, starts
and supervises its agents, and reports, impairs and removes what it made."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from merak import capacity
from merak.errors import FailedPrecondition
from merak.grpcclient import health_serving
from merak.host import HostTuner
from merak.logs import get_logger
from merak.v1 import common_pb2, topology_pb2
from services.topology.backends import (
    DestroyReport,
    HostRuntime,
    ReadyCallback,
    TopologyBackend,
    VhostRuntime,
)
from services.topology.backends.impair import DeviceFaults
from services.topology.backends.local import goalstate_addresses
from services.topology.backends.local.agents import (
    AgentPlan,
    Agents,
    check_socket_paths,
    plan_agents,
    stop_leftover_chassis,
)
from services.topology.backends.local.host import LocalHost
from services.topology.backends.local.kernel import Kernel
from services.topology.backends.local.lablogs import LabLogs
from services.topology.backends.local.processes import ProcessFaults, ProcessSampler
from services.topology.diff import TopologyDiff
from services.topology.metrics import TopologyMetrics
from services.topology.models import Topology, TopologySpec
from services.topology.names import ns_name

log = get_logger(__name__)


class LocalBackend(TopologyBackend):
    """Namespaces, veth pairs and bridges on this machine; agents as local processes."""

    name = "local"

    def __init__(
        self,
        run_root: Path,
        *,
        max_agents: int = capacity.MAX_AGENTS,
        fake_vhosts_per_agent: int = 25_000,
        workers: int = 4,
        agent_env: dict[str, str] | None = None,
        agent_start_timeout: float = 120.0,
        host: HostTuner | None = None,
        stack_run_dir: Path | None = None,
        metrics: TopologyMetrics | None = None,
        lab_logs: LabLogs | None = None,
        goalstate_claims: Path = goalstate_addresses.CLAIMS,
    ) -> None:
        self.run_root = run_root
        # Machine-wide: which lab holds which loopback block for its hosts' goal-state servers.
        self.goalstate_claims = goalstate_claims
        # Where a deleted lab's agent and chassis logs are kept (None: they go with its run directory).
        self.lab_logs = lab_logs
        # The stack's pid files (its OVN central's among them), for faults on those processes.
        self.processes = ProcessFaults(stack_run_dir or run_root.parent)
        self.sampler = ProcessSampler(stack_run_dir or run_root.parent, metrics)
        self.max_agents = max_agents
        self.fake_vhosts_per_agent = fake_vhosts_per_agent
        self.machine = LocalHost(host)
        self.kernel = Kernel(workers)
        self.agents = Agents(agent_env or {}, agent_start_timeout)

    # --- planning ---------------------------------------------------------------------------

    def run_dir(self, short_id: str) -> Path:
        """Sockets, pid files, agent logs of one topology."""
        return self.run_root / short_id

    def plan_agents(self, topology: Topology) -> list[AgentPlan]:
        """Split the vhosts among agent processes; deterministic for the same topology."""
        return plan_agents(
            topology,
            self.run_dir(topology.spec.short_id),
            max_agents=self.max_agents,
            vhosts_per_agent=self.fake_vhosts_per_agent,
        )

    def check(self, spec: TopologySpec) -> None:
        """Limits of this machine: root for real namespaces, a bound on real vhosts, socket paths."""
        self.machine.check(spec)
        check_socket_paths(self.run_root, self.run_dir(spec.short_id))

    # --- deploy ----------------------------------------------------------------------------

    async def deploy(self, topology: Topology, on_ready: ReadyCallback) -> None:
        """Build namespaces, links and bridges (a plane that has them), then start and await the agents."""
        spec = topology.spec
        started = time.perf_counter()
        self.run_dir(spec.short_id).mkdir(parents=True, exist_ok=True)
        goalstate_addresses.claim(self.run_dir(spec.short_id), spec.topology_id, self.goalstate_claims)
        if spec.plane.builds_namespaces:
            await self.machine.make_room(len(topology.nodes), reason=f"topology {spec.topology_id}")
            await self.kernel.build(topology)
            log.info(
                "topology_kernel_built",
                topology_id=spec.topology_id,
                nodes=len(topology.nodes),
                links=len(topology.links),
                seconds=round(time.perf_counter() - started, 3),
            )
        plans = self.plan_agents(topology)
        vhost_index = {node.name: i for i, node in enumerate(topology.vhosts())}
        procs = [self.agents.start(topology, plan, vhost_index) for plan in plans]

        async def await_agent(plan: AgentPlan, proc: subprocess.Popen[bytes] | None) -> None:
            await self.agents.wait(plan, proc)
            await on_ready(list(plan.vhosts))

        await asyncio.gather(*(await_agent(p, proc) for p, proc in zip(plans, procs, strict=True)))
        log.info(
            "topology_deployed",
            topology_id=spec.topology_id,
            vhosts=len(vhost_index),
            agents=len(plans),
            dataplane=spec.dataplane,
            seconds=round(time.perf_counter() - started, 3),
        )

    # --- update ------------------------------------------------------------------------------

    async def check_update(self, old: Topology, new: Topology, change: TopologyDiff) -> None:
        """A vhost that goes must hold no VM (its VMs' namespaces would be orphaned)."""
        if not old.spec.plane.builds_namespaces:
            return
        busy = self.kernel.vhosts_holding_vms(old, change)
        if busy:
            raise FailedPrecondition(
                f"vhosts that would go still hold VMs: {', '.join(busy[:10])}; delete their VMs first "
                "(UPDATE compute to fewer compute nodes)"
            )

    async def update(self, old: Topology, new: Topology, change: TopologyDiff) -> None:
        """Reconcile the lab to `new`: agents whose group of vhosts changes stop, links and nodes that go
        are removed, those that come are built, agents for the new groups start. The rest is untouched."""
        spec = new.spec
        started = time.perf_counter()
        new_plans = {plan.index: plan for plan in self.plan_agents(new)}
        stopped = await self.agents.stop_stale(self.run_dir(spec.short_id), new_plans)
        if spec.plane.builds_namespaces:
            await self.machine.make_room(len(change.added_nodes), reason=f"topology {spec.topology_id}")
            await self.kernel.rebuild(new, change)
        vhost_index = {node.name: i for i, node in enumerate(new.vhosts())}
        plans = list(new_plans.values())
        procs = [self.agents.start(new, plan, vhost_index) for plan in plans]
        await asyncio.gather(*(self.agents.wait(p, proc) for p, proc in zip(plans, procs, strict=True)))
        log.info(
            "topology_updated",
            topology_id=spec.topology_id,
            change=change.summary(),
            agents_restarted=stopped,
            seconds=round(time.perf_counter() - started, 3),
        )

    # --- faults ------------------------------------------------------------------------------

    async def apply_faults(
        self, spec: TopologySpec, faults: Mapping[str, Mapping[str, DeviceFaults]]
    ) -> None:
        """Each node's devices, in its namespace (backends/impair.py)."""
        if any(faults.values()):
            spec.plane.check_impairable()
        for node, devices in sorted(faults.items()):
            await self.kernel.apply_faults(ns_name(spec.short_id, node), dict(devices))

    async def check_faults(
        self, spec: TopologySpec, faults: Mapping[str, Mapping[str, DeviceFaults]], hosts: Mapping[str, int]
    ) -> None:
        """Delay and jitter need netem (probed once on a scratch namespace)."""
        if faults:
            spec.plane.check_impairable()
        delayed = any(f.delay_ms or f.jitter_ms for devices in faults.values() for f in devices.values())
        if delayed and not await self.kernel.has_netem():
            raise FailedPrecondition(
                "delay needs the kernel's netem qdisc (sch_netem), which this kernel lacks"
            )

    async def apply_host_faults(self, topology: Topology, states: Mapping[str, int]) -> None:
        """Crash (SIGKILL, kept down) or freeze (SIGSTOP) the agents serving the vhosts in `states`;
        thaw and restart the others that a host fault held."""
        await self.agents.hold(topology, self.plan_agents(topology), states)

    async def apply_process_faults(self, topology: Topology, states: Mapping[str, int]) -> None:
        """Crash or freeze OVN central's processes and the vhosts' ovn-controllers (processes.py)."""
        plans = self.plan_agents(topology)
        await self.processes.apply(
            topology.spec.topology_id,
            self.run_dir(topology.spec.short_id),
            {node.name: i for i, node in enumerate(topology.vhosts())},
            {vhost: plan.endpoint for plan in plans for vhost in plan.vhosts},
            states,
        )

    # --- supervise ---------------------------------------------------------------------------

    async def supervise(self, topology: Topology, interval: float = 0.5) -> None:
        """Restart the topology's agents that died (crash, OOM, kill), waiting longer after each
        restart that did not last (1 s doubling to 30 s); INFO says why a vhost is not READY."""
        await asyncio.gather(
            self.agents.supervise(topology, self.plan_agents(topology), interval),
            self.sampler.run(topology.spec.topology_id, self.run_dir(topology.spec.short_id)),
        )

    async def process_stats(self, topology: Topology, since: float) -> topology_pb2.ProcessStatsReply:
        """The OVN processes' samples, up to now (processes.ProcessSampler)."""
        spec = topology.spec
        return await self.sampler.current(spec.topology_id, self.run_dir(spec.short_id), since)

    # --- inspect -----------------------------------------------------------------------------

    async def inspect(self, topology: Topology, built: bool) -> dict[str, VhostRuntime]:
        """Namespaces from /run/netns, agents from their pid files and gRPC health, right now."""
        spec = topology.spec
        plans = self.plan_agents(topology)
        present = self.kernel.present(spec.short_id) if spec.plane.builds_namespaces else None
        block = goalstate_addresses.block_of(self.run_dir(spec.short_id))
        index = {node.name: i for i, node in enumerate(topology.vhosts())}
        healthy = await asyncio.gather(
            *(health_serving(p.endpoint) if self.agents.running(p) else _false() for p in plans)
        )
        result: dict[str, VhostRuntime] = {}
        for plan, ok in zip(plans, healthy, strict=True):
            for name in plan.vhosts:
                missing_ns = present is not None and ns_name(spec.short_id, name) not in present
                if ok and not missing_ns:
                    status, detail = common_pb2.READY, ""
                elif not built:
                    status, detail = common_pb2.DEPLOYING, ""
                else:
                    status = common_pb2.ERROR
                    detail = "namespace missing" if missing_ns else self.agents.why_down(plan)
                result[name] = VhostRuntime(
                    status=status,
                    agent_endpoint=plan.endpoint,
                    hostname=self.machine.hostname,
                    detail=detail,
                    # Where Alcor reaches the host's agent (node registration's local_ip, as a pod IP).
                    container_ip=(
                        goalstate_addresses.address(block, index[name]).rpartition(":")[0]
                        if block is not None
                        else ""
                    ),
                )
        return result

    def hosts(self) -> list[HostRuntime]:
        """This machine."""
        return [self.machine.runtime()]

    # --- destroy -----------------------------------------------------------------------------

    async def destroy(self, spec: TopologySpec) -> DestroyReport:
        """Stop the topology's agents, delete every namespace with its prefix, keep the lab's logs
        (lablogs.py), remove its run directory. Each step is taken whatever the one before did; what
        could not be removed is in the report's `left` and said in one warning."""
        run_dir = self.run_dir(spec.short_id)
        self.processes.forget(spec.topology_id)
        self.sampler.forget(spec.topology_id)
        kept = await self._begin_keeping_logs(spec, run_dir)
        stopped, running = await self.agents.stop_all(run_dir)
        left = [f"agent pid {pid} (still running after SIGKILL)" for pid in running]
        # OVN chassis of agents that could not stop them (killed by a host fault, say).
        chassis, running = await asyncio.get_running_loop().run_in_executor(
            None, stop_leftover_chassis, run_dir
        )
        left += [f"OVN chassis pid {pid} (still running after SIGKILL)" for pid in running]
        namespaces, ns_left = await asyncio.to_thread(self.kernel.remove_topology, spec.short_id)
        left += [f"namespace {name}" for name in ns_left]
        logs = await self._finish_keeping_logs(spec, run_dir, kept)
        goalstate_addresses.release(run_dir, self.goalstate_claims)
        if run_dir.exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        report = DestroyReport(
            namespaces=namespaces, processes=stopped + chassis, logs=logs, left=tuple(left)
        )
        log.info(
            "topology_destroyed",
            topology_id=spec.topology_id,
            namespaces=namespaces,
            agents=report.processes,
            logs=logs,
            left=len(left),
        )
        if left:
            log.warning("topology_not_all_removed", topology_id=spec.topology_id, left=report.left_sentence())
        return report

    async def _begin_keeping_logs(self, spec: TopologySpec, run_dir: Path) -> Path | None:
        """The lab's log directory, its chassis' logs held (before their agents remove them). A failure
        to keep logs never fails the teardown: it is logged."""
        if self.lab_logs is None:
            return None
        try:
            return await asyncio.to_thread(self.lab_logs.begin, spec.short_id, run_dir)
        except OSError as exc:
            log.warning("lab_logs_not_kept", topology_id=spec.topology_id, error=str(exc))
            return None

    async def _finish_keeping_logs(self, spec: TopologySpec, run_dir: Path, kept: Path | None) -> str:
        """The agents' logs moved in, older labs' rotated out; where the logs are ("" if nowhere)."""
        if self.lab_logs is None or kept is None:
            return ""
        try:
            files = await asyncio.to_thread(self.lab_logs.finish, kept, run_dir)
        except OSError as exc:
            log.warning("lab_logs_not_kept", topology_id=spec.topology_id, error=str(exc))
            return ""
        if not files:
            return ""
        log.info("lab_logs_kept", topology_id=spec.topology_id, path=str(kept), files=files)
        return str(kept)

    async def close(self) -> None:
        """Stop the worker threads, release the host tuner."""
        await self.processes.close()
        self.kernel.close()
        self.machine.close()


async def _false() -> bool:
    return False
