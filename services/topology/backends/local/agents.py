"""The local backend's agents: how a topology's vhosts are grouped among agent processes, and those
processes, started detached with their vhosts file, awaited healthy, restarted when they die, held
crashed or frozen by host faults, and stopped.

An agent serves gRPC on a unix socket under the topology's run directory, next to its pid file,
log and vhosts file (merak.vhostsfile). With few vhosts each vhost gets its own agent, running in
its namespace; past `max_agents`, one agent serves a contiguous group of vhosts (a Python process
per host costs ~0.3 s CPU and ~40 MB). A data plane that packs agents (`fake`) puts thousands of
vhosts on each.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from merak import vhostsfile
from merak.errors import FailedPrecondition, Unavailable
from merak.grpcclient import health_serving
from merak.logs import get_logger
from merak.procs import alive, pid_from_file, process_state
from merak.v1 import topology_pb2
from services.topology.backends.local import goalstate_addresses
from services.topology.backends.vhosts import vhosts_file
from services.topology.models import Topology

log = get_logger(__name__)

UNIX_PATH_MAX = 107
_MOST_AGENTS = 99_999  # the widest agent index a socket path must hold


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
        """What the agent serves (merak.vhostsfile)."""
        return self.run_dir / f"agent-{self.index}.json"

    @property
    def log_file(self) -> Path:
        """The agent's stdout and stderr."""
        return self.run_dir / f"agent-{self.index}.log"


def plan_agents(
    topology: Topology, run_dir: Path, *, max_agents: int, vhosts_per_agent: int
) -> list[AgentPlan]:
    """Split the vhosts among agent processes; deterministic for the same topology. `vhosts_per_agent`
    applies to a data plane that packs agents, `max_agents` to the others."""
    spec = topology.spec
    names = [node.name for node in topology.vhosts()]
    if spec.plane.packs_agents:
        count = max(1, math.ceil(len(names) / vhosts_per_agent))
    else:
        count = min(len(names), max_agents)
    size = math.ceil(len(names) / count) if names else 0
    groups = [tuple(names[k * size : (k + 1) * size]) for k in range(count)]
    return [
        AgentPlan(
            index=k,
            vhosts=group,
            # An agent serving one vhost runs in its namespace, when its data plane makes one.
            netns=spec.plane.vhost_netns(spec.short_id, group[0]) if size == 1 else "",
            run_dir=run_dir,
        )
        for k, group in enumerate(groups)
        if group
    ]


def check_socket_paths(run_root: Path, run_dir: Path) -> None:
    """FailedPrecondition when the agents' sockets under `run_dir` would not fit a unix socket path."""
    longest = len(str(AgentPlan(_MOST_AGENTS, (), "", run_dir).socket))
    if longest > UNIX_PATH_MAX:
        raise FailedPrecondition(f"run directory {run_root} is too long for unix socket paths")


class Agents:
    """The agent processes of the local backend's topologies, whether this process started them or
    an earlier one did (they outlive a restart of the topology service)."""

    def __init__(self, env: Mapping[str, str], start_timeout: float) -> None:
        self.env = dict(env)
        self.start_timeout = start_timeout
        self.restart_backoff = (1.0, 30.0)  # first and longest wait before restarting a dead agent
        # Agents this process started: polled so that exited ones are reaped, not left as zombies.
        self._children: list[subprocess.Popen[bytes]] = []
        self._started: dict[Path, subprocess.Popen[bytes]] = {}  # the last one by pid file
        # Why an agent is not running, by its pid file, while the supervisor brings it back.
        self._down: dict[Path, str] = {}
        # Agents a host fault holds crashed or frozen (topology.HostState), by pid file: the
        # supervisor leaves them alone.
        self._held: dict[Path, int] = {}

    # --- one agent ---------------------------------------------------------------------------

    def start(
        self, topology: Topology, plan: AgentPlan, vhost_index: Mapping[str, int]
    ) -> subprocess.Popen[bytes] | None:
        """Write the agent's vhosts file and start it, unless it runs already (a resumed deployment)."""
        if _agent_pid(plan) is not None:
            return None
        served = [(vhost_index[name], topology.node(name)) for name in plan.vhosts]
        block = goalstate_addresses.block_of(plan.run_dir)
        where = partial(goalstate_addresses.address, block) if block is not None else (lambda _index: "")
        vhostsfile.write(plan.vhosts_file, vhosts_file(topology, served, where))
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
                env={**os.environ, **self.env},
                start_new_session=True,  # agents outlive a restart of the topology service
            )
        plan.pid_file.write_text(f"{proc.pid}\n")
        self._children.append(proc)
        self._started[plan.pid_file] = proc
        return proc

    async def wait(self, plan: AgentPlan, proc: subprocess.Popen[bytes] | None) -> None:
        """Return once the agent answers health checks; Unavailable if it exits or takes too long."""
        deadline = time.monotonic() + self.start_timeout
        while not await health_serving(plan.endpoint):
            exited = proc.poll() is not None if proc is not None else _agent_pid(plan) is None
            if exited:
                raise Unavailable(f"agent {plan.index} exited during start-up; see {plan.log_file}")
            if time.monotonic() > deadline:
                raise Unavailable(f"agent {plan.index} not healthy after {self.start_timeout:.0f}s")
            await asyncio.sleep(0.05)

    def running(self, plan: AgentPlan) -> bool:
        """The agent of `plan` runs. For an agent this process started, its Popen decides: it keeps
        the exit status (`_agent_pid` reaps a dead process it finds, and reads an exiting one's
        command line as empty, before it can be waited for)."""
        proc = self._started.get(plan.pid_file)
        if proc is not None:
            return proc.poll() is None
        return _agent_pid(plan) is not None

    def exit_reason(self, plan: AgentPlan) -> str:
        """How the agent of `plan` ended, when this process started it."""
        proc = self._started.get(plan.pid_file)
        code = proc.poll() if proc is not None else None
        if code is None:
            return "not running"
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def why_down(self, plan: AgentPlan) -> str:
        """Why the agent of `plan` does not serve: what the supervisor or a host fault said, or its end."""
        return self._down.get(plan.pid_file) or f"agent {self.exit_reason(plan)}"

    # --- host faults -------------------------------------------------------------------------

    async def hold(self, topology: Topology, plans: Sequence[AgentPlan], states: Mapping[str, int]) -> None:
        """Crash (SIGKILL, kept down) or freeze (SIGSTOP) the agents serving the vhosts in `states`;
        thaw and restart the others that a host fault held."""
        vhost_index = {node.name: i for i, node in enumerate(topology.vhosts())}
        for plan in plans:
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
                    proc = self.start(topology, plan, vhost_index)
                    await self.wait(plan, proc)
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

    async def supervise(self, topology: Topology, plans: Sequence[AgentPlan], interval: float) -> None:
        """Restart the agents of `plans` that died (crash, OOM, kill), waiting longer after each
        restart that did not last (1 s doubling to 30 s); `why_down` says why meanwhile."""
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
                    if self.running(plan):
                        if plan.pid_file in self._down and await health_serving(plan.endpoint):
                            self._down.pop(plan.pid_file, None)
                        continue
                    if plan.index not in due:
                        reason = self.exit_reason(plan)
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
                        self.start(topology, plan, vhost_index)
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

    # --- stop --------------------------------------------------------------------------------

    async def stop_stale(self, run_dir: Path, plans: Mapping[int, AgentPlan]) -> int:
        """Stop the agents of `run_dir` that do not serve exactly what `plans` say; how many ran."""
        stale, stopped = await asyncio.get_running_loop().run_in_executor(None, _stop_stale, run_dir, plans)
        for pid_file in stale:
            self._started.pop(pid_file, None)
            self._down.pop(pid_file, None)
        return stopped

    async def stop_all(self, run_dir: Path) -> tuple[int, list[int]]:
        """Stop every agent of `run_dir` (SIGTERM, then SIGKILL) and forget them; how many ran, and the
        pids of those still running after SIGKILL."""
        stopped = await asyncio.get_running_loop().run_in_executor(None, _stop_agents, run_dir)
        self._children = [proc for proc in self._children if proc.poll() is None]
        for pid_file in [f for f in self._started if f.parent == run_dir]:
            del self._started[pid_file]
        for pid_file in [f for f in self._held if f.parent == run_dir]:
            del self._held[pid_file]
            self._down.pop(pid_file, None)
        return stopped


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
        document = vhostsfile.read(pid_file.with_suffix(".json"))
    except (OSError, ValueError):
        return False
    netns_of = {vhost.name: vhost.netns for vhost in document.vhosts}
    same_ns = not plan.netns or netns_of.get(plan.vhosts[0]) == plan.netns
    return document.names == plan.vhosts and same_ns


def _stop_stale(run_dir: Path, plans: Mapping[int, AgentPlan]) -> tuple[list[Path], int]:
    """Stop the agents of the run directory that `_serves` rejects and remove their pid files; which
    pid files, and how many agents ran. Read from the run directory, not from a previous plan: an
    update cut short may have started agents neither graph has."""
    stale = [pid_file for pid_file in sorted(run_dir.glob("agent-*.pid")) if not _serves(pid_file, plans)]
    stopped, _left = _stop_pid_files(stale)
    for pid_file in stale:
        pid_file.unlink(missing_ok=True)
    return stale, stopped


def _stop_agents(run_dir: Path, timeout: float = 10.0) -> tuple[int, list[int]]:
    """SIGTERM every agent of the run directory (by pid file), SIGKILL stragglers; how many ran, and
    the pids of those still running after SIGKILL."""
    if not run_dir.exists():
        return 0, []
    return _stop_pid_files(list(run_dir.glob("agent-*.pid")), timeout)


def _stop_pid_files(pid_files: Sequence[Path], timeout: float = 10.0) -> tuple[int, list[int]]:
    """SIGTERM the agents of these pid files, SIGKILL stragglers; how many ran, and the pids of those
    still running after SIGKILL (a process stuck in the kernel). One that ends meanwhile is gone."""
    pids = []
    for pid_file in pid_files:
        pid = pid_from_file(pid_file, str(pid_file.with_suffix(".json")))
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a frozen agent (a host fault) handles SIGTERM once thawed
                os.kill(pid, signal.SIGTERM)
            pids.append((pid_file, pid))
    deadline = time.monotonic() + timeout
    killed = []
    for pid_file, pid in pids:
        while pid_from_file(pid_file, str(pid_file.with_suffix(".json"))) is not None:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.append((pid_file, pid))
                break
            time.sleep(0.02)
    return len(pids), _still_running(killed, lambda f: str(f.with_suffix(".json")))


def _still_running(
    processes: Sequence[tuple[Path, int]], marker: Callable[[Path], str], timeout: float = 5.0
) -> list[int]:
    """The pids of `processes` (pid file, pid), sent SIGKILL, that still run after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    running = list(processes)
    while running and time.monotonic() < deadline:
        time.sleep(0.02)
        running = [(f, pid) for f, pid in running if pid_from_file(f, marker(f)) == pid]
    return [pid for _f, pid in running]


def stop_leftover_chassis(run_dir: Path) -> tuple[int, list[int]]:
    """SIGKILL the OVN chassis daemons still running from `run_dir/ovn/<vhost>/` (their agent stops them
    on SIGTERM; one killed outright cannot); how many there were, and the pids still running after."""
    found = [
        (pid_file, pid)
        for pid_file in sorted(run_dir.glob("ovn/*/*.pid"))
        if (pid := pid_from_file(pid_file, str(run_dir)))
    ]
    for _pid_file, pid in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    left = _still_running(found, lambda _f: str(run_dir), timeout=10)
    if found:
        log.warning("leftover_chassis_stopped", run_dir=str(run_dir), processes=len(found), left=left)
    return len(found), left
