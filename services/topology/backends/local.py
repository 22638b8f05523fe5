"""The local backend: every node a network namespace on this machine, links veth pairs, switches bridges.

Agents are processes on this machine serving gRPC on unix sockets under the run directory. With
few vhosts each vhost gets its own agent running inside its namespace; past `max_agents`, one
agent serves a contiguous group of vhosts (a Python process per host costs ~0.3 s CPU and ~40 MB).
With `dataplane: fake` nothing touches the kernel and a handful of agents serve every vhost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from merak import capacity, netns
from merak.errors import FailedPrecondition, InvalidArgument, Unavailable
from merak.grpcclient import health_serving
from merak.host import HostTuner
from merak.logs import get_logger
from merak.procs import alive, pid_from_file, process_state
from merak.v1 import common_pb2, topology_pb2
from services.topology.backends import (
    DestroyReport,
    HostRuntime,
    ReadyCallback,
    TopologyBackend,
    VhostRuntime,
    impair,
)
from services.topology.backends.impair import DeviceFaults
from services.topology.diff import TopologyDiff
from services.topology.models import Link, Node, Topology, TopologySpec, vhost_mac

log = get_logger(__name__)

NS_PREFIX = "mk"
BRIDGE = "br0"
MAX_REAL_VHOSTS = 10_000
UNIX_PATH_MAX = 107
EEXIST = 17


def ns_prefix(short_id: str) -> str:
    """Every namespace of a topology starts with this, and nothing else does."""
    return f"{NS_PREFIX}-{short_id}-"


def ns_name(short_id: str, node: str) -> str:
    """The namespace of `node`."""
    return f"{ns_prefix(short_id)}{node}"


def vm_ns_prefix(short_id: str, index: int) -> str:
    """The prefix of the namespaces the agent makes for the VMs of the index-th vhost.

    Node names start with a letter, so `mk-<short>-<index>-…` never meets a node's namespace.
    """
    return f"{ns_prefix(short_id)}{index}"


@dataclass(frozen=True, slots=True)
class AgentPlan:
    """One agent process: which vhosts it serves, where it listens, where its files are."""

    index: int
    vhosts: tuple[str, ...]
    netns: str  # the namespace the agent runs in ("" = this machine's)
    run_dir: Path

    @property
    def socket(self) -> Path:
        """The unix socket the agent serves gRPC on."""
        return self.run_dir / f"agent-{self.index}.sock"

    @property
    def endpoint(self) -> str:
        """gRPC target of the agent."""
        return f"unix://{self.socket}"

    @property
    def pid_file(self) -> Path:
        """The agent's pid."""
        return self.run_dir / f"agent-{self.index}.pid"

    @property
    def vhosts_file(self) -> Path:
        """What the agent serves (JSON)."""
        return self.run_dir / f"agent-{self.index}.json"

    @property
    def log_file(self) -> Path:
        """The agent's stdout and stderr."""
        return self.run_dir / f"agent-{self.index}.log"


class BuildStopped(Exception):
    """A kernel build was told to stop (its topology is being deleted)."""


async def _uninterrupted(loop: asyncio.AbstractEventLoop, work: Callable[[threading.Event], None]) -> None:
    """Run `work(stop)` in a thread; when the caller is cancelled, set `stop` and wait for the thread
    to end before the cancellation goes on: what the thread makes after a DELETE removed the
    namespaces would be left behind for good (a CREATE then DELETE leaked its namespaces)."""
    stop = threading.Event()
    future = loop.run_in_executor(None, work, stop)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait({future})  # neither cancels the thread's future nor raises its error
        raise


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
    ) -> None:
        self.run_root = run_root
        # Sizes the machine-wide kernel settings (neighbour table, namespace limit) before a build.
        self.host = host
        self.max_agents = max_agents
        self.fake_vhosts_per_agent = fake_vhosts_per_agent
        self.workers = workers
        self.agent_env = agent_env or {}
        self.agent_start_timeout = agent_start_timeout
        self.hostname = socket.gethostname()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="netns")
        # Agents this process started: polled so that exited ones are reaped, not left as zombies.
        self._children: list[subprocess.Popen[bytes]] = []
        self._started: dict[Path, subprocess.Popen[bytes]] = {}  # the last one by pid file
        # Why an agent is not running, by its pid file, while the supervisor brings it back.
        self._down: dict[Path, str] = {}
        self.restart_backoff = (1.0, 30.0)  # first and longest wait before restarting a dead agent
        # Agents a host fault holds crashed or frozen (topology.HostState), by pid file: the
        # supervisor leaves them alone.
        self._held: dict[Path, int] = {}
        self._netem: bool | None = None  # whether the kernel has netem, once probed

    # --- planning ---------------------------------------------------------------------------

    def run_dir(self, short_id: str) -> Path:
        """Sockets, pid files, agent logs of one topology."""
        return self.run_root / short_id

    def plan_agents(self, topology: Topology) -> list[AgentPlan]:
        """Split the vhosts among agent processes; deterministic for the same topology."""
        spec = topology.spec
        names = [node.name for node in topology.vhosts()]
        if spec.dataplane == "fake":
            count = max(1, math.ceil(len(names) / self.fake_vhosts_per_agent))
        else:
            count = min(len(names), self.max_agents)
        size = math.ceil(len(names) / count) if names else 0
        run_dir = self.run_dir(spec.short_id)
        own_netns = spec.dataplane == "real" and size == 1
        return [
            AgentPlan(
                index=k,
                vhosts=tuple(names[k * size : (k + 1) * size]),
                netns=ns_name(spec.short_id, names[k]) if own_netns else "",
                run_dir=run_dir,
            )
            for k in range(count)
            if names[k * size : (k + 1) * size]
        ]

    def check(self, spec: TopologySpec) -> None:
        """Limits of this machine: root for real namespaces, a bound on real vhosts, socket paths."""
        if spec.dataplane == "real":
            if os.geteuid() != 0:
                raise FailedPrecondition(
                    "the local backend needs root to build namespaces (or dataplane: fake)"
                )
            if spec.number_of_vhosts > MAX_REAL_VHOSTS:
                raise InvalidArgument(
                    "config.number_of_vhosts",
                    f"the local backend builds at most {MAX_REAL_VHOSTS} real vhosts on one machine, "
                    f"got {spec.number_of_vhosts}; use dataplane: fake or the kubernetes backend",
                )
        longest = len(str(self.run_dir(spec.short_id) / "agent-99999.sock"))
        if longest > UNIX_PATH_MAX:
            raise FailedPrecondition(f"run directory {self.run_root} is too long for unix socket paths")

    # --- deploy ----------------------------------------------------------------------------

    async def deploy(self, topology: Topology, on_ready: ReadyCallback) -> None:
        """Build namespaces, links and bridges (real), then start and await the agents."""
        spec = topology.spec
        started = time.perf_counter()
        run_dir = self.run_dir(spec.short_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        if spec.dataplane == "real":
            loop = asyncio.get_running_loop()
            if self.host is not None:
                host = self.host
                await loop.run_in_executor(
                    None,
                    lambda: host.ensure_for_new(len(topology.nodes), reason=f"topology {spec.topology_id}"),
                )
            await _uninterrupted(loop, lambda stop: self._build_kernel(topology, stop))
            log.info(
                "topology_kernel_built",
                topology_id=spec.topology_id,
                nodes=len(topology.nodes),
                links=len(topology.links),
                seconds=round(time.perf_counter() - started, 3),
            )
        plans = self.plan_agents(topology)
        vhost_index = {node.name: i for i, node in enumerate(topology.vhosts())}
        procs = [self._start_agent(topology, plan, vhost_index) for plan in plans]

        async def await_agent(plan: AgentPlan, proc: subprocess.Popen[bytes] | None) -> None:
            await self._wait_agent(plan, proc)
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

    def _build_kernel(self, topology: Topology, stop: threading.Event) -> None:
        """Every node and link of the topology (see _build_parts).

        Stops before its next step once `stop` is set (a DELETE while it builds)."""
        self._build_parts(topology, topology.nodes, topology.links, stop)

    def _build_parts(
        self, topology: Topology, nodes: Sequence[Node], links: Sequence[Link], stop: threading.Event
    ) -> None:
        """`nodes` and `links` of `topology`: namespaces first, then bridges, then links from their a
        side, then the b sides and the new vhosts' addresses. Idempotent: what exists is kept."""
        short = topology.spec.short_id
        ns_of = {node.name: ns_name(short, node.name) for node in topology.nodes}
        self._parallel(_create_ns, [(ns_of[n.name],) for n in nodes], stop=stop)
        self._parallel(_prepare_node, [(ns_of[n.name], n.is_switch) for n in nodes], in_ns=True, stop=stop)
        by_a: dict[str, list[Link]] = defaultdict(list)
        by_b: dict[str, list[str]] = defaultdict(list)
        for link in links:
            by_a[link.a_node].append(link)
            by_b[link.b_node].append(link.b_nic)
        self._parallel(
            _create_links,
            [(ns_of[a], topology.node(a).is_switch, group, ns_of) for a, group in by_a.items()],
            in_ns=True,
            stop=stop,
        )
        vhost_index = {node.name: i for i, node in enumerate(topology.vhosts())}
        fresh = {node.name for node in nodes}
        jobs = []
        for node in topology.nodes:
            # b sides of the links, and the vhosts built now (a switch without b sides has nothing to do)
            if node.name not in by_b and (node.name not in fresh or node.is_switch):
                continue
            index = vhost_index.get(node.name)
            mac = vhost_mac(short, index) if index is not None else ""
            jobs.append((ns_of[node.name], node, by_b.get(node.name, []), mac))
        self._parallel(_finish_node, jobs, in_ns=True, stop=stop)

    def _parallel(
        self,
        func: Callable[..., None],
        jobs: Sequence[tuple[Any, ...]],
        in_ns: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        def run(args: tuple[Any, ...]) -> None:
            if stop is not None and stop.is_set():
                raise BuildStopped
            if in_ns:
                netns.run_in(args[0], lambda: func(*args))
            else:
                func(*args)

        # Every job ends before this returns (a failure must not leave others still making
        # namespaces behind a DELETE); then the first failure is raised.
        futures = [self._pool.submit(run, args) for args in jobs]
        concurrent.futures.wait(futures)
        for future in futures:
            future.result()

    def _start_agent(
        self, topology: Topology, plan: AgentPlan, vhost_index: dict[str, int]
    ) -> subprocess.Popen[bytes] | None:
        if _agent_pid(plan) is not None:
            return None  # already running (a resumed deployment)
        spec = topology.spec
        vhosts = []
        for name in plan.vhosts:
            node = topology.node(name)
            index = vhost_index[name]
            nic = node.nics[0] if node.nics else None
            ip, _, prefix = (nic.ip if nic else "").partition("/")
            vhosts.append(
                {
                    "name": name,
                    "index": index,
                    "netns": ns_name(spec.short_id, name) if spec.dataplane == "real" else "",
                    "vm_ns_prefix": vm_ns_prefix(spec.short_id, index),
                    "datapath_ip": ip,
                    "prefix_len": int(prefix or 0),
                    "nic": nic.name if nic else "",
                    "mac": vhost_mac(spec.short_id, index),
                }
            )
        document = {
            "topology_id": spec.topology_id,
            "short_id": spec.short_id,
            "dataplane": spec.dataplane,
            "vhosts": vhosts,
        }
        plan.vhosts_file.write_text(json.dumps(document))
        plan.socket.unlink(missing_ok=True)
        argv = [
            sys.executable, "-m", "services.agent",
            "--listen", plan.endpoint,
            "--vhosts_file", str(plan.vhosts_file),
            "--metrics_port", "0",
            "--log_format", "json",
        ]  # fmt: skip
        if plan.netns:
            argv += ["--netns", plan.netns]
        with plan.log_file.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.agent_env},
                start_new_session=True,  # agents outlive a restart of the topology service
            )
        plan.pid_file.write_text(f"{proc.pid}\n")
        self._children.append(proc)
        self._started[plan.pid_file] = proc
        return proc

    async def _wait_agent(self, plan: AgentPlan, proc: subprocess.Popen[bytes] | None) -> None:
        deadline = time.monotonic() + self.agent_start_timeout
        while not await health_serving(plan.endpoint):
            exited = proc.poll() is not None if proc is not None else _agent_pid(plan) is None
            if exited:
                raise Unavailable(f"agent {plan.index} exited during start-up; see {plan.log_file}")
            if time.monotonic() > deadline:
                raise Unavailable(f"agent {plan.index} not healthy after {self.agent_start_timeout:.0f}s")
            await asyncio.sleep(0.05)

    # --- update ------------------------------------------------------------------------------

    async def check_update(self, old: Topology, new: Topology, change: TopologyDiff) -> None:
        """A vhost that goes must hold no VM (its VMs' namespaces would be orphaned)."""
        if old.spec.dataplane != "real":
            return
        busy = []
        for node in change.removed_nodes:
            if node.is_switch:
                continue
            prefix = f"{vm_ns_prefix(old.spec.short_id, change.positions[node.name])}-"
            vms = [ns for ns in netns.list_names(prefix) if not ns.startswith(f"{prefix}vpc")]
            if vms:
                busy.append(f"{node.name} ({len(vms)})")
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
        # The agents to stop are read from the run directory, not from `old`'s plan: an update cut
        # short may have started agents neither graph has.
        stale = [
            pid_file
            for pid_file in sorted(self.run_dir(spec.short_id).glob("agent-*.pid"))
            if not _serves(pid_file, new_plans)
        ]
        loop = asyncio.get_running_loop()
        stopped = await loop.run_in_executor(None, _stop_pid_files, stale)
        for pid_file in stale:
            self._started.pop(pid_file, None)
            self._down.pop(pid_file, None)
            pid_file.unlink(missing_ok=True)
        if spec.dataplane == "real":
            if self.host is not None:
                host = self.host
                await loop.run_in_executor(
                    None,
                    lambda: host.ensure_for_new(
                        len(change.added_nodes), reason=f"topology {spec.topology_id}"
                    ),
                )
            await _uninterrupted(loop, lambda stop: self._rebuild_kernel(new, change, stop))
        vhost_index = {node.name: i for i, node in enumerate(new.vhosts())}
        plans = list(new_plans.values())
        procs = [self._start_agent(new, plan, vhost_index) for plan in plans]
        await asyncio.gather(*(self._wait_agent(p, proc) for p, proc in zip(plans, procs, strict=True)))
        log.info(
            "topology_updated",
            topology_id=spec.topology_id,
            change=change.summary(),
            agents_restarted=stopped,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _rebuild_kernel(self, new: Topology, change: TopologyDiff, stop: threading.Event) -> None:
        """Links that go (from their a side, the peer goes with it), nodes that go, then what comes as
        a build does it: namespaces, bridges, links from their a side, b sides and addresses."""
        short = new.spec.short_id
        staying = {node.name for node in new.nodes} - {node.name for node in change.added_nodes}
        going: dict[str, list[str]] = defaultdict(list)
        for link in change.removed_links:
            if link.a_node in staying:
                going[link.a_node].append(link.a_nic)
            elif link.b_node in staying:
                going[link.b_node].append(link.b_nic)
        self._parallel(
            _delete_links, [(ns_name(short, n), nics) for n, nics in going.items()], in_ns=True, stop=stop
        )
        # A vhost that goes takes its VPC namespaces along (its VMs are gone: check_update).
        leftovers = [
            ns
            for node in change.removed_nodes
            if not node.is_switch
            for ns in netns.list_names(f"{vm_ns_prefix(short, change.positions[node.name])}-")
        ]
        gone = [ns_name(short, n.name) for n in change.removed_nodes] + leftovers
        self._parallel(_remove_ns, [(ns,) for ns in gone], stop=stop)
        self._build_parts(new, change.added_nodes, change.added_links, stop)

    # --- faults ------------------------------------------------------------------------------

    async def apply_faults(
        self, spec: TopologySpec, faults: Mapping[str, Mapping[str, DeviceFaults]]
    ) -> None:
        """Each node's devices, in its namespace (backends/impair.py)."""
        if spec.dataplane != "real":
            raise FailedPrecondition("a fake dataplane has no links to impair")
        loop = asyncio.get_running_loop()
        for node, devices in sorted(faults.items()):
            ns = ns_name(spec.short_id, node)
            await loop.run_in_executor(self._pool, impair.apply, ns, dict(devices))

    async def check_faults(
        self, spec: TopologySpec, faults: Mapping[str, Mapping[str, DeviceFaults]], hosts: Mapping[str, int]
    ) -> None:
        """Delay and jitter need netem (probed once on a scratch namespace)."""
        if spec.dataplane != "real":
            raise FailedPrecondition("a fake dataplane has no links to impair")
        delayed = any(f.delay_ms or f.jitter_ms for devices in faults.values() for f in devices.values())
        if delayed:
            if self._netem is None:
                self._netem = await asyncio.get_running_loop().run_in_executor(
                    self._pool, impair.netem_available
                )
            if not self._netem:
                raise FailedPrecondition(
                    "delay needs the kernel's netem qdisc (sch_netem), which this kernel lacks"
                )

    async def apply_host_faults(self, topology: Topology, states: Mapping[str, int]) -> None:
        """Crash (SIGKILL, kept down) or freeze (SIGSTOP) the agents serving the vhosts in `states`;
        thaw and restart the others that a host fault held."""
        vhost_index = {node.name: i for i, node in enumerate(topology.vhosts())}
        for plan in self.plan_agents(topology):
            wanted = max((states.get(v, topology_pb2.HOST_RUNNING) for v in plan.vhosts), default=0)
            held = self._held.get(plan.pid_file, topology_pb2.HOST_RUNNING)
            if wanted == held:
                continue
            pid = _agent_pid(plan)
            if wanted == topology_pb2.HOST_RUNNING:
                del self._held[plan.pid_file]
                if pid is not None and held == topology_pb2.HOST_FROZEN:
                    os.kill(pid, signal.SIGCONT)
                elif pid is None:
                    proc = self._start_agent(topology, plan, vhost_index)
                    await self._wait_agent(plan, proc)
                self._down.pop(plan.pid_file, None)
                continue
            self._held[plan.pid_file] = wanted
            if pid is not None and held == topology_pb2.HOST_FROZEN:
                os.kill(pid, signal.SIGCONT)  # a frozen agent that is now crashed
            if pid is not None:
                crash = wanted == topology_pb2.HOST_CRASHED
                os.kill(pid, signal.SIGKILL if crash else signal.SIGSTOP)
                # Returned only once it took effect: the process is gone, or stopped.
                await _until(partial(_took_effect, pid, crash))
            what = "crashed" if wanted == topology_pb2.HOST_CRASHED else "frozen"
            self._down[plan.pid_file] = f"agent {what} by a host fault (vhosts {', '.join(plan.vhosts)})"
            log.info("host_fault", topology_id=topology.spec.topology_id, agent=plan.index, state=what)

    # --- supervise ---------------------------------------------------------------------------

    async def supervise(self, topology: Topology, interval: float = 0.5) -> None:
        """Restart the topology's agents that died (crash, OOM, kill), waiting longer after each
        restart that did not last (1 s doubling to 30 s); INFO says why a vhost is not READY."""
        plans = self.plan_agents(topology)
        vhost_index = {node.name: i for i, node in enumerate(topology.vhosts())}
        first, longest = self.restart_backoff
        wait = dict.fromkeys((p.index for p in plans), first)
        due: dict[int, float] = {}
        restarts: dict[int, int] = {}
        try:
            while True:
                now = time.monotonic()
                for plan in plans:
                    if plan.pid_file in self._held:
                        continue  # a host fault keeps it crashed or frozen
                    if self._agent_running(plan):
                        if plan.pid_file in self._down and await health_serving(plan.endpoint):
                            self._down.pop(plan.pid_file, None)
                        continue
                    if plan.index not in due:
                        reason = self._exit_reason(plan)
                        due[plan.index] = now + wait[plan.index]
                        self._down[plan.pid_file] = (
                            f"agent {reason}; restarting in {wait[plan.index]:.0f}s "
                            f"(restarts so far: {restarts.get(plan.index, 0)})"
                        )
                        log.warning(
                            "agent_died",
                            topology_id=topology.spec.topology_id,
                            agent=plan.index,
                            reason=reason,
                            restart_in=wait[plan.index],
                        )
                    elif now >= due[plan.index]:
                        del due[plan.index]
                        restarts[plan.index] = restarts.get(plan.index, 0) + 1
                        wait[plan.index] = min(longest, wait[plan.index] * 2)
                        self._start_agent(topology, plan, vhost_index)
                        log.info(
                            "agent_restarted",
                            topology_id=topology.spec.topology_id,
                            agent=plan.index,
                            restarts=restarts[plan.index],
                        )
                await asyncio.sleep(interval)
        finally:
            for plan in plans:
                if plan.pid_file not in self._held:
                    self._down.pop(plan.pid_file, None)

    def _agent_running(self, plan: AgentPlan) -> bool:
        """The agent of `plan` runs. For an agent this process started, its Popen decides: it keeps
        the exit status (`_agent_pid` reaps a dead process it finds, and reads an exiting one's
        command line as empty, before it can be waited for)."""
        proc = self._started.get(plan.pid_file)
        if proc is not None:
            return proc.poll() is None
        return _agent_pid(plan) is not None

    def _exit_reason(self, plan: AgentPlan) -> str:
        """How the agent of `plan` ended, when this process started it."""
        proc = self._started.get(plan.pid_file)
        code = proc.poll() if proc is not None else None
        if code is None:
            return "not running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    # --- inspect -----------------------------------------------------------------------------

    async def inspect(self, topology: Topology, built: bool) -> dict[str, VhostRuntime]:
        """Namespaces from /run/netns, agents from their pid files and gRPC health, right now."""
        spec = topology.spec
        plans = self.plan_agents(topology)
        present = set(netns.list_names(ns_prefix(spec.short_id))) if spec.dataplane == "real" else None
        healthy = await asyncio.gather(
            *(health_serving(p.endpoint) if self._agent_running(p) else _false() for p in plans)
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
                    down = self._down.get(plan.pid_file) or f"agent {self._exit_reason(plan)}"
                    detail = "namespace missing" if missing_ns else down
                result[name] = VhostRuntime(
                    status=status,
                    agent_endpoint=plan.endpoint,
                    hostname=self.hostname,
                    detail=detail,
                )
        return result

    def hosts(self) -> list[HostRuntime]:
        """This machine."""
        return [HostRuntime(name=self.hostname, ip=_primary_ip())]

    # --- destroy -----------------------------------------------------------------------------

    async def destroy(self, spec: TopologySpec) -> DestroyReport:
        """Stop the topology's agents, delete every namespace with its prefix, remove its run directory."""
        run_dir = self.run_dir(spec.short_id)
        stopped = await asyncio.get_running_loop().run_in_executor(None, _stop_agents, run_dir)
        self._children = [proc for proc in self._children if proc.poll() is None]
        for pid_file in [f for f in self._started if f.parent == run_dir]:
            del self._started[pid_file]
        for pid_file in [f for f in self._held if f.parent == run_dir]:
            del self._held[pid_file]
            self._down.pop(pid_file, None)
        names = netns.list_names(ns_prefix(spec.short_id))
        for name in names:
            netns.remove(name)
        if run_dir.exists():
            for child in run_dir.iterdir():
                child.unlink(missing_ok=True)
            run_dir.rmdir()
        log.info("topology_destroyed", topology_id=spec.topology_id, namespaces=len(names), agents=stopped)
        return DestroyReport(namespaces=len(names), processes=stopped)

    async def close(self) -> None:
        """Stop the worker threads, release the host tuner."""
        self._pool.shutdown(wait=True)
        if self.host is not None:
            self.host.close()


# --- kernel work, run by worker threads inside the namespace concerned --------------------------


def _create_ns(name: str) -> None:
    if not netns.exists(name):
        netns.create(name)


def _remove_ns(name: str) -> None:
    netns.remove(name)


def _lookup(ipr: IPRoute, ifname: str) -> int | None:
    found: list[int] = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _prepare_node(ns: str, is_switch: bool) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=_lookup(ipr, "lo"), state="up")
        if not is_switch:
            return
        if _lookup(ipr, BRIDGE) is None:
            # STP off (the default), so ports forward at once; the tree has no loops to break.
            ipr.link("add", ifname=BRIDGE, kind="bridge", br_forward_delay=0)
        ipr.link("set", index=_lookup(ipr, BRIDGE), state="up")


def _create_links(ns: str, is_switch: bool, links: Iterable[Link], ns_of: dict[str, str]) -> None:
    with IPRoute() as ipr:
        bridge = _lookup(ipr, BRIDGE) if is_switch else None
        for link in links:
            if _lookup(ipr, link.a_nic) is None:
                # Both ends are born in their namespaces: nothing ever appears in the root namespace.
                ipr.link(
                    "add",
                    ifname=link.a_nic,
                    kind="veth",
                    peer={"ifname": link.b_nic, "net_ns_fd": ns_of[link.b_node]},
                )
            index = _lookup(ipr, link.a_nic)
            if bridge is not None:
                ipr.link("set", index=index, master=bridge)
            ipr.link("set", index=index, state="up")


def _delete_links(ns: str, nics: Sequence[str]) -> None:
    with IPRoute() as ipr:
        for nic in nics:
            index = _lookup(ipr, nic)
            if index is not None:
                ipr.link("del", index=index)  # a veth: its peer goes with it


def _finish_node(ns: str, node: Node, b_nics: list[str], mac: str) -> None:
    with IPRoute() as ipr:
        bridge = _lookup(ipr, BRIDGE) if node.is_switch else None
        for nic_name in b_nics:
            index = _lookup(ipr, nic_name)
            if bridge is not None:
                ipr.link("set", index=index, master=bridge)
            ipr.link("set", index=index, state="up")
        if node.is_switch:
            return
        for position, nic in enumerate(node.nics):
            index = _lookup(ipr, nic.name)
            if index is None:
                continue  # a CUSTOM vhost NIC that no link uses
            if position == 0 and mac:
                ipr.link("set", index=index, address=mac)
            if nic.ip:
                address, _, prefix = nic.ip.partition("/")
                try:
                    ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
                except NetlinkError as exc:
                    if exc.code != EEXIST:
                        raise
            ipr.link("set", index=index, state="up")


# --- agents --------------------------------------------------------------------------------------


async def _false() -> bool:
    return False


def _agent_pid(plan: AgentPlan) -> int | None:
    return pid_from_file(plan.pid_file, str(plan.vhosts_file))


def _took_effect(pid: int, crashed: bool) -> bool:
    """The agent `pid` is gone (crashed) or stopped (frozen)."""
    return not alive(pid) if crashed else process_state(pid) in ("T", "t")


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise Unavailable(f"a host fault did not take effect within {timeout:.0f}s")
        await asyncio.sleep(0.02)


def _serves(pid_file: Path, plans: Mapping[int, AgentPlan]) -> bool:
    """The agent of `pid_file` serves exactly what the plan of its index says (its vhosts file)."""
    index = pid_file.stem.removeprefix("agent-")
    plan = plans.get(int(index)) if index.isdigit() else None
    if plan is None:
        return False
    try:
        document = json.loads(pid_file.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return False
    serving = tuple(str(v.get("name", "")) for v in document.get("vhosts", []))
    netns_of = {str(v.get("name", "")): str(v.get("netns", "")) for v in document.get("vhosts", [])}
    same_ns = not plan.netns or netns_of.get(plan.vhosts[0]) == plan.netns
    return serving == plan.vhosts and same_ns


def _stop_agents(run_dir: Path, timeout: float = 10.0) -> int:
    """SIGTERM every agent of the run directory (by pid file), SIGKILL stragglers; returns how many ran."""
    if not run_dir.exists():
        return 0
    return _stop_pid_files(list(run_dir.glob("agent-*.pid")), timeout)


def _stop_pid_files(pid_files: Sequence[Path], timeout: float = 10.0) -> int:
    """SIGTERM the agents of these pid files, SIGKILL stragglers; returns how many ran."""
    pids = []
    for pid_file in pid_files:
        pid = pid_from_file(pid_file, str(pid_file.with_suffix(".json")))
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # a frozen agent (a host fault) handles SIGTERM only once thawed
            os.kill(pid, signal.SIGTERM)
            pids.append((pid_file, pid))
    deadline = time.monotonic() + timeout
    for pid_file, pid in pids:
        while pid_from_file(pid_file, str(pid_file.with_suffix(".json"))) is not None:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    return len(pids)


def _primary_ip() -> str:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # no packet is sent; this picks the outgoing address
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"
