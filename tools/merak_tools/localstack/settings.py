"""The local stack's settings: where it lives, which ports it takes, and the endpoints they make."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Sequence
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
from merak.ovs import NB_PORT, SB_PORT, Central
from merak.tls import ENV_CERT
from merak_tools.doctor import Plan

# Start order; `down` stops in reverse.
SERVICES = ("topology", "network", "compute", "scenario", "agent")


def default_workers(cpus: int) -> int:
    """Compute workers for a machine of `cpus` CPUs."""
    return max(1, min(8, cpus // 2))


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

    def grpc_address(self, service: str) -> str:
        """Where `service` answers gRPC in this stack (host:port on this machine)."""
        return f"127.0.0.1:{self.grpc_port(service)}"

    @property
    def rest_port(self) -> int:
        """Merak's REST API (the scenario service)."""
        return REST_PORT + self.port_offset

    @property
    def rest_url(self) -> str:
        """Merak's REST API on this machine: HTTPS when the stack runs on TLS (MERAK_TLS_CERT is set)."""
        scheme = "https" if os.environ.get(ENV_CERT) else "http"
        return f"{scheme}://localhost:{self.rest_port}"

    def metrics_port(self, service: str) -> int:
        """The metrics port of `service` (or a compute worker: "compute-worker", "compute-worker-2", …)."""
        if service.startswith("compute-worker-"):  # the n-th worker: ports after the first's
            return METRICS_PORTS["compute-worker"] + int(service.rsplit("-", 1)[1]) - 1 + self.port_offset
        return METRICS_PORTS[service] + self.port_offset

    def ovn_port(self, kind: str) -> int:
        """The loopback TCP port of OVN central's "nb" or "sb" database in this stack."""
        return (NB_PORT if kind == "nb" else SB_PORT) + self.port_offset

    @property
    def ovn_dir(self) -> Path:
        """OVN central's databases, sockets and logs (absolute: chassis in other namespaces and the
        processes, whose working directory is the state directory, use these paths)."""
        return (self.state_dir / "ovn").absolute()

    @property
    def run_dir(self) -> Path:
        """Pid files and unix sockets."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        """One log file per process."""
        return self.state_dir / "logs"

    @property
    def redis_password_file(self) -> Path:
        """The stack's Redis password (mode 0600): whoever can read it can rewrite every service's state."""
        return self.state_dir / "redis" / "password"

    @property
    def redis_password(self) -> str:
        """The stack's Redis password, made (random) the first time it is asked for and kept."""
        return read_or_make_secret(self.redis_password_file)

    @property
    def redis_address(self) -> str:
        """The stack's Redis, without its password (what may be shown)."""
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_url(self) -> str:
        """The stack's Redis with its password: what the services and the tools connect to. Passed in
        environments and never on a command line (any local user can read those in `ps`)."""
        return f"redis://:{self.redis_password}@127.0.0.1:{self.redis_port}/0"

    @property
    def temporal_address(self) -> str:
        """The Temporal frontend."""
        return f"127.0.0.1:{self.temporal_port}"


def read_or_make_secret(path: Path) -> str:
    """The secret kept in `path`, made first when there is none: 64 hex digits, the file mode 0600 in a
    directory of mode 0700, written whole before it appears (two processes asking at once agree)."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (secrets.token_hex(32) + "\n").encode())
    finally:
        os.close(fd)
    try:
        os.link(draft, path)  # fails when another process made it first: then theirs is the secret
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_text().strip()


# TCP states (as /proc/net/tcp numbers them) that leave a port free for a server to listen on.
_PORT_FREE_STATES = {"06", "07"}  # TIME_WAIT, CLOSE


def port_in_use(port: int) -> bool:
    """True when a socket holds TCP `port` (any address, IPv4 or IPv6): one listens there, or a live
    client connection uses it as its source port (the ports sit in the kernel's ephemeral range: such
    a connection, a Temporal server's own say, makes a server's bind fail). Not a trial bind: a
    finished connection in TIME-WAIT makes a trial bind fail for a minute, yet a server can listen."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 3
                and fields[3] not in _PORT_FREE_STATES
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                return True
    return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for a private stack's Redis, Temporal)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Ports `quiet_port` handed out in this process (not listening yet when the next one is asked for).
_QUIET_GIVEN: set[int] = set()


def quiet_port(low: int = 20_000, high: int = 32_000) -> int:
    """A TCP port below the kernel's source ports (32768 up) and the stacks' service ports (40051 up)
    that no socket holds now, for a private stack's Redis or Temporal: `free_port` answers one of the
    source ports, which may be one of the same stack's service ports (then its service cannot bind) or
    be taken by a client connection before Redis or Temporal binds it."""
    span = high - low
    start = secrets.randbelow(span)
    for step in range(span):
        port = low + (start + step) % span
        if port in _QUIET_GIVEN or port_in_use(port):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _QUIET_GIVEN.add(port)
        return port
    raise RuntimeError(f"no free TCP port in [{low}, {high})")


def endpoints(settings: StackSettings, *, ovn: bool = False) -> Sequence[tuple[str, str]]:
    """What a user can talk to once the stack is up (OVN central's databases when `ovn`)."""
    rows = [
        (name, f"localhost:{settings.grpc_port(name)} (metrics :{settings.metrics_port(name)}/metrics)")
        for name in ("scenario", "compute", "topology", "network", "agent")
    ]
    rows += [
        ("scenario REST", f"{settings.rest_url}/api (OpenAPI docs: /swagger/)"),
        *(
            (name.replace("-", " "), f"metrics :{settings.metrics_port(name)}/metrics")
            for name in settings.worker_names
        ),
        ("temporal", f"localhost:{settings.temporal_port}, namespace {TEMPORAL_NAMESPACE}"),
        ("temporal ui", f"http://localhost:{settings.temporal_ui_port}"),
        ("redis", f"{settings.redis_address} (password in {settings.redis_password_file})"),
    ]
    if ovn:
        central = Central(settings.ovn_dir)
        rows += [
            (f"ovn {kind}", f"{central.remote(kind)}, tcp:{settings.bind_host}:{settings.ovn_port(kind)}")
            for kind in ("nb", "sb")
        ]
    rows.append(("state", str(settings.state_dir)))
    return rows
