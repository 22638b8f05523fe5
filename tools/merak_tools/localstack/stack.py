"""The local stack: Redis, the Temporal dev server and every service as processes on this machine."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from merak.config import (
    GRPC_PORTS,
    METRICS_PORTS,
    REDIS_PORT,
    REST_PORT,
    TEMPORAL_NAMESPACE,
    TEMPORAL_PORT,
    TEMPORAL_UI_PORT,
    CommonSettings,
)
from merak.grpcclient import health_serving_blocking, open_blocking_channel
from merak.host import HostTuner, Sizing
from merak.procs import alive, pid_from_file
from merak.temporal import temporal_cli_path
from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc
from merak_tools.doctor import Plan, failures, run_checks

TEMPORAL_HEALTH_SERVICE = "temporal.api.workflowservice.v1.WorkflowService"
# Start order; `down` stops in reverse.
SERVICES = ("topology", "network", "compute", "scenario", "agent")


def default_workers(cpus: int) -> int:
    """Compute workers for a machine of `cpus` CPUs."""
    return max(1, min(8, cpus // 2))


# Restarts the components that die (merak_tools.supervise).
SUPERVISOR = "supervisor"


class StackSettings(CommonSettings):
    """Where the local stack lives and which ports it takes (`MERAK_*` variables)."""

    model_config = SettingsConfigDict(env_prefix="MERAK_", extra="ignore")

    bind_host: str = "127.0.0.1"
    redis_port: int = REDIS_PORT
    temporal_port: int = TEMPORAL_PORT
    temporal_ui_port: int = TEMPORAL_UI_PORT
    start_timeout: float = 90.0
    # Added to every service's gRPC and metrics port, so a second stack (or a test) can run beside one.
    port_offset: int = 0
    # The lab `up` sizes the machine for (the demo's); labs raise the kernel settings further as they grow.
    plan_vhosts: int = 5
    plan_vms: int = 50
    # Compute worker processes (`MERAK_COMPUTE_WORKERS`): a worker keeps one CPU busy at a large
    # deployment, and Temporal, Redis and the agents need the others: half the CPUs, 1 to 8.
    compute_workers: int = Field(default_factory=lambda: default_workers(os.cpu_count() or 1), ge=1, le=64)

    @property
    def worker_names(self) -> list[str]:
        """The stack's compute worker components: compute-worker, compute-worker-2, …"""
        return ["compute-worker", *(f"compute-worker-{i}" for i in range(2, self.compute_workers + 1))]

    @property
    def plan(self) -> Plan:
        """The lab size `up` prepares this machine for."""
        return Plan(vhosts=self.plan_vhosts, vms=self.plan_vms)

    def grpc_port(self, service: str) -> int:
        """The gRPC port of `service` in this stack."""
        return GRPC_PORTS[service] + self.port_offset

    @property
    def rest_port(self) -> int:
        """Merak's REST API (the scenario service)."""
        return REST_PORT + self.port_offset

    def metrics_port(self, service: str) -> int:
        """The metrics port of `service` (or a compute worker: "compute-worker", "compute-worker-2", …)."""
        if service.startswith("compute-worker-"):  # the n-th worker: ports after the first's
            return METRICS_PORTS["compute-worker"] + int(service.rsplit("-", 1)[1]) - 1 + self.port_offset
        return METRICS_PORTS[service] + self.port_offset

    @property
    def run_dir(self) -> Path:
        """Pid files and unix sockets."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        """One log file per process."""
        return self.state_dir / "logs"

    @property
    def redis_url(self) -> str:
        """The stack's Redis."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def temporal_address(self) -> str:
        """The Temporal frontend."""
        return f"127.0.0.1:{self.temporal_port}"


@dataclass(frozen=True)
class Component:
    """One process of the stack: how to start it, its ports, and how to tell it is healthy."""

    name: str
    argv: tuple[str, ...]
    ports: dict[str, int]
    health: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    # A process whose /proc/<pid>/cmdline contains this is ours (guards against recycled pids).
    marker: str = ""


@dataclass
class ComponentState:
    """What `status` knows about a component."""

    component: Component
    pid: int | None
    running: bool
    healthy: bool


class StackError(Exception):
    """The stack cannot start or stop as asked; the message says why."""


def port_in_use(port: int) -> bool:
    """True when a socket listens on TCP `port` (any address, IPv4 or IPv6). Not a trial bind: the
    ports sit in the kernel's ephemeral range, and a closed client connection that used one as its
    source port (TIME-WAIT) makes a bind fail for a minute although a server can listen there."""
    listen = "0A"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == listen and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a private stack's Redis, Temporal)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_healthy(port: int) -> bool:
    """True when Redis answers PING on `port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def components(settings: StackSettings) -> list[Component]:
    """Every process of the local stack, in start order."""
    state = settings.state_dir
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    redis = Component(
        name="redis",
        argv=(
            redis_server,
            "--port",
            str(settings.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(state / "redis"),
            "--appendonly",
            "yes",
            "--save",
            "",
            # Safe by default: protected, and no runtime reconfiguration (CONFIG SET could make Redis
            # write files where it likes); the stack's processes need neither.
            "--protected-mode",
            "yes",
            "--rename-command",
            "CONFIG",
            "",
            "--daemonize",
            "no",
        ),
        ports={"redis": settings.redis_port},
        health=lambda: redis_healthy(settings.redis_port),
        marker="redis-server",
    )
    temporal = Component(
        name="temporal",
        argv=(
            str(temporal_cli_path()),
            "server",
            "start-dev",
            "--db-filename",
            str(state / "temporal" / "temporal.db"),
            "--ip",
            settings.bind_host,
            "--port",
            str(settings.temporal_port),
            "--ui-port",
            str(settings.temporal_ui_port),
            "--namespace",
            TEMPORAL_NAMESPACE,
            "--log-level",
            "warn",
        ),
        ports={"grpc": settings.temporal_port, "ui": settings.temporal_ui_port},
        health=lambda: health_serving_blocking(
            settings.temporal_address, TEMPORAL_HEALTH_SERVICE, ours=False
        ),
        marker="start-dev",
    )
    common_env = {
        "MERAK_REDIS_URL": settings.redis_url,
        "MERAK_TEMPORAL_ADDRESS": settings.temporal_address,
        "MERAK_STATE_DIR": str(state),
        "MERAK_LOG_FORMAT": "json",
        "MERAK_LOG_LEVEL": settings.log_level,
        # gRPC, REST and metrics on this machine only (the agents the topology service starts too);
        # containers and the cluster manifests set their own addresses.
        "MERAK_HOST": settings.bind_host,
        "MERAK_METRICS_HOST": settings.bind_host,
    }
    services = [
        Component(
            name=name,
            argv=(sys.executable, "-m", f"services.{name}"),
            ports={"grpc": settings.grpc_port(name), "metrics": settings.metrics_port(name)},
            health=_service_health(settings.grpc_port(name)),
            env={
                **common_env,
                "MERAK_GRPC_PORT": str(settings.grpc_port(name)),
                "MERAK_METRICS_PORT": str(settings.metrics_port(name)),
            },
            marker=f"services.{name}",
        )
        for name in SERVICES
    ]
    workers = [
        Component(
            name=name,
            argv=(sys.executable, "-m", "services.compute.worker"),
            ports={"metrics": settings.metrics_port(name)},
            health=partial(http_ok, f"http://127.0.0.1:{settings.metrics_port(name)}/metrics"),
            env={
                **common_env,
                "MERAK_WORKER_METRICS_PORT": str(settings.metrics_port(name)),
                "MERAK_NETWORK_ADDRESS": f"127.0.0.1:{settings.grpc_port('network')}",
            },
            marker="services.compute.worker",
        )
        for name in settings.worker_names
    ]
    for component in services:
        if component.name in ("compute", "scenario"):
            component.env["MERAK_NETWORK_ADDRESS"] = f"127.0.0.1:{settings.grpc_port('network')}"
            component.env["MERAK_TOPOLOGY_ADDRESS"] = f"127.0.0.1:{settings.grpc_port('topology')}"
        if component.name == "scenario":
            component.env["MERAK_COMPUTE_ADDRESS"] = f"127.0.0.1:{settings.grpc_port('compute')}"
            component.env["MERAK_REST_PORT"] = str(settings.rest_port)
            component.ports["rest"] = settings.rest_port
    supervisor = Component(
        name=SUPERVISOR,
        argv=(sys.executable, "-m", "merak_tools.supervise"),
        ports={},
        health=lambda: True,  # a process and its pid; it serves nothing
        env={"MERAK_STACK_SETTINGS": settings.model_dump_json()},
        marker="merak_tools.supervise",
    )
    # The supervisor comes last: started when everything is up, stopped first by `down`.
    return [redis, temporal, *services, *workers, supervisor]


def code_fingerprint(roots: Sequence[Path] | None = None) -> str:
    """A hash of the stack's Python code (merak and services by default): what `up` compares."""
    if roots is None:
        # The services package as this interpreter finds it (merak does not import it: layering).
        spec = importlib.util.find_spec("services")
        found = [Path(spec.origin).parent] if spec is not None and spec.origin else []
        roots = [Path(__file__).parent, *found]
    digest = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def http_ok(url: str) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _service_health(port: int) -> Callable[[], bool]:
    return lambda: health_serving_blocking(f"127.0.0.1:{port}")


class LocalStack:
    """Start, stop and inspect the local stack; pid files make `down` stop exactly what `up` started."""

    def __init__(self, settings: StackSettings, out: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.out = out
        self.components = components(settings)
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

    def up(self) -> list[ComponentState]:
        """Check the machine, start what is not running (and the services again if the code changed
        under them), wait until everything is healthy; harmless when already up."""
        self.preflight()
        for directory in (
            self.settings.run_dir,
            self.settings.log_dir,
            self.settings.state_dir / "redis",
            self.settings.state_dir / "temporal",
        ):
            directory.mkdir(parents=True, exist_ok=True)
        code = code_fingerprint()
        self._restart_if_other_code(code)
        to_start = [c for c in self.components if self.running_pid(c) is None]
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
        """Delete every topology the stack's topology service runs (agents, namespaces); their ids."""
        topology = next(c for c in self.components if c.name == "topology")
        if self.running_pid(topology) is None or not topology.health():
            return []
        address = f"127.0.0.1:{self.settings.grpc_port('topology')}"
        deleted = []
        with open_blocking_channel(address) as channel:
            stub = topology_pb2_grpc.MerakTopologyServiceStub(channel)
            for summary in stub.ListTopologies(topology_pb2.ListTopologiesRequest(), timeout=30).topologies:
                request = topology_pb2.InternalTopologyInfo(
                    operation_type=common_pb2.DELETE,
                    config=topology_pb2.InternalTopologyConfiguration(topology_id=summary.topology_id),
                )
                stub.TopologyHandler(request, timeout=300)
                self.out(f"deleted topology {summary.topology_id} ({summary.number_of_vhosts} vhosts)")
                deleted.append(summary.topology_id)
        return deleted

    def down(self, keep_labs: bool = False) -> list[str]:
        """Stop every component `up` started (by pid file), services first; returns their names.

        Running topologies are deleted first, so no agent or namespace outlives the stack, unless
        `keep_labs`: then they stay, and the next `up` finds them again.
        """
        if not keep_labs:
            self.teardown_labs()
        stopped = []
        for component in reversed(self.components):
            if self._stop(component):
                stopped.append(component.name)
        return stopped

    def start_component(self, component: Component) -> None:
        """Start one component (the supervisor restarts the ones that died)."""
        self._start(component)

    def _start(self, component: Component) -> None:
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


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def endpoints(settings: StackSettings) -> Sequence[tuple[str, str]]:
    """What a user can talk to once the stack is up."""
    rows = [
        (name, f"localhost:{settings.grpc_port(name)} (metrics :{settings.metrics_port(name)}/metrics)")
        for name in ("scenario", "compute", "topology", "network", "agent")
    ]
    rows += [
        ("scenario REST", f"http://localhost:{settings.rest_port}/api (OpenAPI docs: /swagger/)"),
        *(
            (name.replace("-", " "), f"metrics :{settings.metrics_port(name)}/metrics")
            for name in settings.worker_names
        ),
        ("temporal", f"localhost:{settings.temporal_port}, namespace {TEMPORAL_NAMESPACE}"),
        ("temporal ui", f"http://localhost:{settings.temporal_ui_port}"),
        ("redis", settings.redis_url),
        ("state", str(settings.state_dir)),
    ]
    return rows
