"""The local stack's life: `up` (check the machine, start what is not running, wait until healthy),
`down` (delete the labs, stop what `up` started), `status`; pid files make `down` stop exactly that."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from merak import host
from merak.errors import rpc_error_text
from merak.grpcclient import open_blocking_channel
from merak.host import HostTuner, Sizing
from merak.procs import alive, pid_from_file
from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc
from merak_tools.doctor import failures, run_checks
from merak_tools.localstack.components import Component, components, ovn_off_reason, redis_healthy
from merak_tools.localstack.settings import StackSettings, port_in_use


@dataclass
class ComponentState:
    """What `status` knows about a component."""

    component: Component
    pid: int | None
    running: bool
    healthy: bool


class StackError(Exception):
    """The stack cannot start or stop as asked; the message says why."""


class LabsLeft(StackError):
    """Labs that could not be deleted (every other one was), each with why in short words; raised by
    `down` once the stack is stopped all the same (`stopped` names what stopped)."""

    def __init__(self, failures: Sequence[str], stopped: Sequence[str] = ()) -> None:
        self.failures = list(failures)
        self.stopped = list(stopped)
        super().__init__(
            "could not delete every lab: "
            + "; ".join(self.failures)
            + ". What was not deleted is kept: the next `merak up` finds it, `merak down` tries again"
        )


# How long one lab's DELETE may take: its agents get 10 s to stop before SIGKILL, its namespaces go in
# one batch (a 1,000-vhost lab goes in about a second).
LAB_DELETE_SECONDS = 300.0


def delete_labs(
    stub: topology_pb2_grpc.MerakTopologyServiceStub,
    out: Callable[[str], None],
    timeout: float = LAB_DELETE_SECONDS,
) -> tuple[list[str], list[str]]:
    """DELETE every topology the topology service of `stub` runs, each tried whatever the others did:
    the ids deleted (or found gone), and what failed, in short words ("<id>: UNAVAILABLE: ...")."""
    try:
        listed = stub.ListTopologies(topology_pb2.ListTopologiesRequest(), timeout=30).topologies
    except grpc.RpcError as exc:
        return [], [f"the topology service did not list them ({rpc_error_text(exc)})"]
    deleted: list[str] = []
    failed: list[str] = []
    for summary in listed:
        request = topology_pb2.InternalTopologyInfo(
            operation_type=common_pb2.DELETE,
            config=topology_pb2.InternalTopologyConfiguration(topology_id=summary.topology_id),
        )
        try:
            stub.TopologyHandler(request, timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                # Gone since it was listed (a DELETE the client gave up on finished at the server).
                out(f"topology {summary.topology_id} was already gone")
                deleted.append(summary.topology_id)
                continue
            failed.append(f"{summary.topology_id}: {rpc_error_text(exc)}")
            out(f"could not delete topology {summary.topology_id}: {rpc_error_text(exc)}")
            continue
        out(f"deleted topology {summary.topology_id} ({summary.number_of_vhosts} vhosts)")
        deleted.append(summary.topology_id)
    return deleted, failed


# The packages whose code the stack's processes run: the runtime, the tools (the supervisor) and the
# services. Named, not found from this file, so that where this module sits does not change the hash.
CODE_PACKAGES = ("merak", "merak_tools", "services")


def code_fingerprint(roots: Sequence[Path] | None = None) -> str:
    """A hash of the stack's Python code (CODE_PACKAGES by default): what `up` compares."""
    if roots is None:
        roots = [
            Path(location)
            for name in CODE_PACKAGES
            if (spec := importlib.util.find_spec(name)) is not None
            for location in spec.submodule_search_locations or ()
            if Path(location).is_dir()  # an editable install adds a placeholder to a namespace's path
        ]
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


class LocalStack:
    """Start, stop and inspect the local stack; pid files make `down` stop exactly what `up` started."""

    def __init__(self, settings: StackSettings, out: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.out = out
        # Why OVN central is not part of this stack ("" when it is): the `ovn` plugin then answers
        # FAILED_PRECONDITION, the rest of the stack runs as before.
        self.ovn_off = ovn_off_reason(settings)
        self.components = components(settings, ovn=not self.ovn_off)
        # Processes started by this object; poll() on them is exact where /proc may still show the
        # pre-exec command line of a child that has just been forked.
        self._started: dict[str, subprocess.Popen[bytes]] = {}

    def pid_file(self, component: Component) -> Path:
        """Where the component's pid is kept."""
        return self.settings.run_dir / f"{component.name}.pid"

    def log_file(self, component: Component) -> Path:
        """The component's stdout/stderr."""
        return self.settings.log_dir / f"{component.name}.log"

    def running_pid(self, component: Component) -> int | None:
        """The pid of the component if its pid file names a live process that is ours."""
        return pid_from_file(self.pid_file(component), component.marker)

    def status(self) -> list[ComponentState]:
        """Every component: pid, alive, healthy."""
        states = []
        for component in self.components:
            pid = self.running_pid(component)
            states.append(
                ComponentState(component, pid, pid is not None, pid is not None and component.health())
            )
        return states

    def preflight(self) -> Sizing:
        """`merak doctor`'s checks (a failure refuses the start), then the kernel settings for the plan."""
        plan = self.settings.plan
        checks = run_checks(plan)
        for check in checks:
            if check.status in ("warn", "fail"):
                self.out(f"doctor: {check.status}: {check.name}: {check.current} ({check.meaning})")
        failed = failures(checks)
        if failed:
            raise StackError(
                "this machine cannot run the stack: "
                + "; ".join(f"{c.name}: {c.current} ({c.meaning})" for c in failed)
                + ". `merak doctor` shows every check."
            )
        if os.geteuid() != 0:
            return Sizing()
        with HostTuner() as tuner:
            sizing = tuner.ensure(plan.namespaces, reason="merak up")
        for change in sizing.changes:
            self.out(f"host: raised {change} (sized for a lab of {plan}; bigger labs raise it further)")
        for short in sizing.shortfalls:
            self.out(f"host: cannot raise {short}")
        return sizing

    def _reserve_ports(self) -> None:
        """The stack's ports lie in the kernel's range of source ports (32768-60999): kept out of it, so
        no client connection takes one between the check that it is free and the bind."""
        if os.geteuid() != 0:
            return
        ports = [port for component in self.components for port in component.ports.values()]
        reserved, why = host.reserve_ports(ports)
        if reserved:
            # Given back by `down` (the ones this stack added; ports reserved before it stay).
            with self.reserved_file.open("a") as kept:
                kept.write(host.format_port_list(reserved) + "\n")
            self.out(f"host: reserved ports {host.format_port_list(reserved)} ({host.RESERVED_PORTS})")
        elif why:
            self.out(f"host: cannot reserve the stack's ports ({host.RESERVED_PORTS}: {why})")

    @property
    def reserved_file(self) -> Path:
        """The ports this stack added to the kernel's reserved ports, given back by `down`."""
        return self.settings.run_dir / "reserved-ports"

    def _release_ports(self) -> None:
        try:
            ports = host.parse_port_list(",".join(self.reserved_file.read_text().split()))
        except FileNotFoundError:
            return
        released, why = host.release_ports(ports)
        if why:  # kept, for the next `down` to try again
            self.out(f"host: cannot release the stack's ports ({host.RESERVED_PORTS}: {why})")
            return
        self.reserved_file.unlink(missing_ok=True)
        if released:
            self.out(f"host: released ports {host.format_port_list(released)} ({host.RESERVED_PORTS})")

    @property
    def code_file(self) -> Path:
        """The fingerprint of the code the running services were started from."""
        return self.settings.run_dir / "code.sha256"

    def _restart_if_other_code(self, code: str) -> None:
        """Services started from other code (a `git pull` under a running stack) go, to start again:
        an old compute worker replaying workflows with the new modules fails forever."""
        ours = [c for c in self.components if c.argv[0] == sys.executable and self.running_pid(c)]
        if not ours:
            return
        try:
            started_from = self.code_file.read_text().strip()
        except OSError:
            started_from = ""
        if started_from == code:
            return
        self.out(
            "the running stack's services were started from other code: restarting them "
            f"({', '.join(c.name for c in ours)}; Redis, Temporal and running labs stay)"
        )
        for component in reversed(ours):
            self._stop(component)

    def _restart_redis_without_password(self) -> None:
        """A Redis started by an earlier Merak, which asks for no password, goes, with the services that
        use it, to start again with the password (its data stays, in the append-only file)."""
        redis = next(c for c in self.components if c.name == "redis")
        if self.running_pid(redis) is None or not redis_healthy(self.settings.redis_port):
            return
        self.out("the running Redis asks for no password: restarting it with one, and the services")
        for component in reversed(self.components):
            if (component is redis or component.argv[0] == sys.executable) and self.running_pid(component):
                self._stop(component)

    def up(self) -> list[ComponentState]:
        """Check the machine, start what is not running (and the services again if the code changed
        under them), wait until everything is healthy; harmless when already up."""
        self.preflight()
        if self.ovn_off:
            self.out(f"OVN central: off, {self.ovn_off}: the `ovn` network plugin is unavailable")
        for directory in (
            self.settings.run_dir,
            self.settings.log_dir,
            self.settings.state_dir / "redis",
            self.settings.state_dir / "temporal",
        ):
            directory.mkdir(parents=True, exist_ok=True)
        code = code_fingerprint()
        self._restart_if_other_code(code)
        self._restart_redis_without_password()
        to_start = [c for c in self.components if self.running_pid(c) is None]
        self._reserve_ports()
        taken = [
            f"port {port} ({c.name} {what})"
            for c in to_start
            for what, port in c.ports.items()
            if port_in_use(port)
        ]
        if taken:
            raise StackError(
                "cannot start the stack, in use by another process: "
                + ", ".join(taken)
                + ". Stop that process, or run `merak down` if it is an earlier stack."
            )
        started: list[Component] = []
        try:
            for component in self.components:
                if component in to_start:
                    self._start(component)
                    started.append(component)
                self._wait_healthy(component)
        except BaseException:
            for component in reversed(started):
                self._stop(component)
            raise
        self.code_file.write_text(code + "\n")
        return self.status()

    def teardown_labs(self) -> list[str]:
        """Delete every topology the stack's topology service runs (agents, namespaces); their ids.
        Every lab is tried; LabsLeft names those that could not be deleted."""
        deleted, failed = self._delete_labs()
        if failed:
            raise LabsLeft(failed)
        return deleted

    def _delete_labs(self) -> tuple[list[str], list[str]]:
        """The ids deleted, and what failed (delete_labs); nothing when the topology service is down."""
        topology = next(c for c in self.components if c.name == "topology")
        if self.running_pid(topology) is None:
            return [], []
        if not topology.health():
            return [], ["the topology service runs but does not answer its health check"]
        with open_blocking_channel(self.settings.grpc_address("topology")) as channel:
            return delete_labs(topology_pb2_grpc.MerakTopologyServiceStub(channel), self.out)

    def down(self, keep_labs: bool = False) -> list[str]:
        """Stop every component `up` started (by pid file), services first; returns their names.

        Running topologies are deleted first, so no agent or namespace outlives the stack, unless
        `keep_labs`: then they stay, and the next `up` finds them again. A lab that cannot be deleted
        stops nothing: the stack stops all the same, then LabsLeft says which labs are left and why.
        """
        failed = [] if keep_labs else self._delete_labs()[1]
        stopped = []
        for component in reversed(self.components):
            if self._stop(component):
                stopped.append(component.name)
        self._release_ports()
        if failed:
            raise LabsLeft(failed, stopped)
        return stopped

    def start_component(self, component: Component) -> None:
        """Start one component (the supervisor restarts the ones that died)."""
        self._start(component)

    def _start(self, component: Component) -> None:
        if component.prepare is not None:
            try:
                component.prepare()
            except (OSError, subprocess.SubprocessError) as exc:
                raise StackError(f"cannot prepare {component.name}'s files: {_why(exc)}") from exc
        env = {**os.environ, **component.env}
        log = self.log_file(component).open("ab")
        try:
            proc = subprocess.Popen(
                component.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.settings.state_dir,
                start_new_session=True,
            )
        finally:
            log.close()
        self._started[component.name] = proc
        self.pid_file(component).write_text(f"{proc.pid}\n")
        self.out(f"started {component.name} (pid {proc.pid}), log {self.log_file(component)}")

    def _wait_healthy(self, component: Component) -> None:
        deadline = time.monotonic() + self.settings.start_timeout
        while not component.health():
            proc = self._started.get(component.name)
            exited = proc.poll() is not None if proc else self.running_pid(component) is None
            if exited:
                raise StackError(
                    f"{component.name} exited during start-up; see {self.log_file(component)}:\n"
                    + _tail(self.log_file(component))
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{component.name} is not healthy after {self.settings.start_timeout:.0f}s; "
                    f"see {self.log_file(component)}"
                )
            time.sleep(0.1)

    def _stop(self, component: Component, timeout: float = 20.0) -> bool:
        proc = self._started.pop(component.name, None)
        pid = proc.pid if proc and proc.poll() is None else self.running_pid(component)
        self.pid_file(component).unlink(missing_ok=True)
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        # A process frozen by a fault (SIGSTOP: OVN central's) acts on SIGTERM once it runs again.
        _signal_group(pid, signal.SIGCONT)
        deadline = time.monotonic() + timeout
        while alive(pid):
            if time.monotonic() > deadline:
                _signal_group(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        if proc is not None:
            proc.wait()
        self.out(f"stopped {component.name} (pid {pid})")
        return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process and its session (the Temporal CLI runs the server as a child)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _why(exc: BaseException) -> str:
    """An exception and, for a program that failed, what it wrote on stderr."""
    stderr = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else None
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    return f"{exc}: {stderr.strip()}" if stderr and stderr.strip() else str(exc)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
