"""What the local stack starts: Redis, the Temporal dev server, OVN central (when OVN is installed), the
services, the compute workers and the supervisor, each a `Component` with its command line, ports and
health check."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from merak import ovs
from merak.config import TEMPORAL_NAMESPACE
from merak.errors import InvalidArgument
from merak.grpcclient import health_serving_blocking
from merak.temporal import temporal_cli_path
from merak_tools.localstack.controlplane import stack_control_plane
from merak_tools.localstack.settings import SERVICES, StackSettings

TEMPORAL_HEALTH_SERVICE = "temporal.api.workflowservice.v1.WorkflowService"
# Restarts the components that die (merak_tools.supervise).
SUPERVISOR = "supervisor"
# OVN central, started before the network service (its `ovn` plugin's NB and SB); pid files of these
# names are also where the topology service finds them for process faults.
OVN_COMPONENTS = ("ovn-nb", "ovn-sb", "ovn-northd")
OVN_DATABASES = {"nb": "OVN_Northbound", "sb": "OVN_Southbound"}
UNIX_PATH_MAX = 107  # sun_path's bytes, less the terminating NUL


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
    # Run before every start (the first and the supervisor's restarts): files the process needs.
    prepare: Callable[[], None] | None = None


def redis_healthy(port: int, password: str = "") -> bool:
    """True when Redis answers PING on `port` (after AUTH with `password`, when one is given)."""
    request = (f"AUTH {password}\r\n" if password else "").encode() + b"PING\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(request)
            replies = b""
            while replies.count(b"\r\n") < request.count(b"\r\n"):
                chunk = sock.recv(256)
                if not chunk:
                    return False
                replies += chunk
            return replies.splitlines()[-1] == b"+PONG" and not replies.startswith(b"-")
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def jsonrpc(path: Path, method: str, params: list[Any] | None = None, timeout: float = 1.0) -> Any:
    """One JSON-RPC call to an OVSDB server or an OVS/OVN control socket (unixctl) listening on the unix
    socket `path`; its result. OSError when nothing answers within `timeout`, ValueError on an error."""
    request = json.dumps({"method": method, "params": params or [], "id": 0}).encode()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        _connect_unix(sock, path)
        sock.sendall(request)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"{path} closed the connection before answering {method}")
            received += chunk
            try:
                reply = json.loads(received)
                break
            except ValueError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} did not finish answering {method}") from None
    if not isinstance(reply, dict):
        raise ValueError(f"{path} answered {method} with {reply!r:.200}")
    if reply.get("error") is not None:
        raise ValueError(f"{path} answered {method} with an error: {reply['error']!r:.200}")
    return reply.get("result")


def _connect_unix(sock: socket.socket, path: Path) -> None:
    if len(os.fsencode(path)) <= UNIX_PATH_MAX:
        sock.connect(str(path))
        return
    # Too long for sun_path: through the directory's descriptor, as OVS itself does on Linux.
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{directory}/{path.name}")
    finally:
        os.close(directory)


def ovsdb_serving(path: Path, database: str) -> bool:
    """True when the ovsdb-server on the unix socket `path` serves `database` (JSON-RPC list_dbs)."""
    try:
        databases = jsonrpc(path, "list_dbs")
    except (OSError, ValueError):
        return False
    return isinstance(databases, list) and database in databases


def unixctl_answers(path: Path, command: str) -> bool:
    """True when the OVS/OVN daemon whose control socket is `path` answers `command` (as ovs-appctl)."""
    try:
        jsonrpc(path, command)
    except (OSError, ValueError):
        return False
    return True


def _service_health(address: str) -> Callable[[], bool]:
    return lambda: health_serving_blocking(address)


def redis_config_file(settings: StackSettings) -> Path:
    """The configuration the stack's redis-server reads (mode 0600: it holds the password)."""
    return settings.state_dir / "redis" / "redis.conf"


def redis_config(settings: StackSettings) -> str:
    """The stack's redis.conf: its port and files, and a password (`requirepass`) in a file rather than
    on the command line, where `ps` would show it to every local user."""
    directory = str((settings.state_dir / "redis").absolute()).replace("\\", "\\\\").replace('"', '\\"')
    return "\n".join(
        (
            f"port {settings.redis_port}",
            "bind 127.0.0.1",
            f'dir "{directory}"',
            "appendonly yes",
            'save ""',
            # Safe by default: a password, protected mode, and no runtime reconfiguration (CONFIG SET
            # could make Redis write files where it likes); the stack's processes need neither.
            f"requirepass {settings.redis_password}",
            "protected-mode yes",
            'rename-command CONFIG ""',
            "daemonize no",
            "",
        )
    )


def _write_redis_config(settings: StackSettings) -> None:
    path = redis_config_file(settings)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as config:
        os.fchmod(fd, 0o600)  # a file left by an earlier stack keeps its mode through O_CREAT
        config.write(redis_config(settings))


def _redis(settings: StackSettings) -> Component:
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    return Component(
        name="redis",
        argv=(redis_server, str(redis_config_file(settings).absolute())),
        ports={"redis": settings.redis_port},
        health=lambda: redis_healthy(settings.redis_port, settings.redis_password),
        marker="redis-server",
        prepare=partial(_write_redis_config, settings),
    )


SQLITE_PRAGMAS = ("--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal")


def _temporal(settings: StackSettings) -> Component:
    return Component(
        name="temporal",
        argv=(
            str(temporal_cli_path()),
            "server",
            "start-dev",
            "--db-filename",
            str(settings.state_dir / "temporal" / "temporal.db"),
            # SQLite's default syncs the disk on every commit: a teardown of a million VMs spent 40%
            # of Temporal's CPU in fsync and writeback (perf). A write-ahead log synced at checkpoints
            # loses nothing when a process of the stack dies, only the last commits if the machine does.
            *SQLITE_PRAGMAS,
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


def _common_env(settings: StackSettings) -> dict[str, str]:
    """What every service and worker of the stack is told: where Redis, Temporal and its state are."""
    return {
        "MERAK_REDIS_URL": settings.redis_url,
        "MERAK_TEMPORAL_ADDRESS": settings.temporal_address,
        "MERAK_STATE_DIR": str(settings.state_dir),
        "MERAK_LOG_FORMAT": "json",
        "MERAK_LOG_LEVEL": settings.log_level,
        # gRPC, REST and metrics on this machine only (the agents the topology service starts too);
        # containers and the cluster manifests set their own addresses.
        "MERAK_HOST": settings.bind_host,
        "MERAK_METRICS_HOST": settings.bind_host,
        # The Alcor and OVN endpoints a request may name (the topology service passes it to the agents).
        "MERAK_CONTROL_PLANE_ALLOW": stack_control_plane(settings),
    }


def ovn_central(settings: StackSettings) -> ovs.Central:
    """The stack's OVN central: databases, sockets, control sockets and logs under <state_dir>/ovn/."""
    return ovs.Central(settings.ovn_dir)


def ovn_off_reason(settings: StackSettings) -> str:
    """Why the stack runs no OVN central ("" when it runs one)."""
    gone = ovs.missing()
    if gone:
        return f"OVN is not installed (missing {', '.join(gone)}; `make install` installs it)"
    central = ovn_central(settings)
    try:
        for kind in OVN_DATABASES:
            ovs.check_remote(f"OVN {kind} socket", central.remote(kind))
    except InvalidArgument as exc:
        return f"the state directory cannot hold OVN's sockets ({exc}); set MERAK_STATE_DIR"
    return ""


def _ovsdb(settings: StackSettings, central: ovs.Central, kind: str) -> Component:
    port = settings.ovn_port(kind)
    return Component(
        name=f"ovn-{kind}",
        # In the foreground, a child of the stack like every component: SIGTERM ends it for good.
        argv=central.server_argv(kind, tcp=(settings.bind_host, port)),
        ports={"tcp": port},
        health=partial(ovsdb_serving, central.socket(kind), OVN_DATABASES[kind]),
        env=central.env,
        marker=str(central.db(kind)),
        # The databases are made once and kept, like Redis's files: a restart finds its rows again.
        prepare=central.prepare,
    )


def _northd(central: ovs.Central) -> Component:
    control = central.root / "ovn-northd.ctl"  # Central.northd_argv's --unixctl
    return Component(
        name="ovn-northd",
        argv=central.northd_argv(),
        ports={},
        health=partial(unixctl_answers, control, "status"),
        env=central.env,
        marker=str(control),
        prepare=central.prepare,
    )


def _service(settings: StackSettings, name: str, central: ovs.Central | None = None) -> Component:
    env = {
        **_common_env(settings),
        "MERAK_GRPC_PORT": str(settings.grpc_port(name)),
        "MERAK_METRICS_PORT": str(settings.metrics_port(name)),
    }
    ports = {"grpc": settings.grpc_port(name), "metrics": settings.metrics_port(name)}
    if name in ("compute", "scenario"):
        env["MERAK_NETWORK_ADDRESS"] = settings.grpc_address("network")
        env["MERAK_TOPOLOGY_ADDRESS"] = settings.grpc_address("topology")
    if name == "network" and central is not None:
        # The `ovn` plugin's default OVN: this central, by its unix sockets.
        env["MERAK_OVN_NB"] = central.remote("nb")
        env["MERAK_OVN_SB"] = central.remote("sb")
    if name == "scenario":
        env["MERAK_COMPUTE_ADDRESS"] = settings.grpc_address("compute")
        env["MERAK_REST_PORT"] = str(settings.rest_port)
        ports["rest"] = settings.rest_port
    return Component(
        name=name,
        argv=(sys.executable, "-m", f"services.{name}"),
        ports=ports,
        health=_service_health(settings.grpc_address(name)),
        env=env,
        marker=f"services.{name}",
    )


def _worker(settings: StackSettings, name: str) -> Component:
    return Component(
        name=name,
        argv=(sys.executable, "-m", "services.compute.worker"),
        ports={"metrics": settings.metrics_port(name)},
        health=partial(http_ok, f"http://127.0.0.1:{settings.metrics_port(name)}/metrics"),
        env={
            **_common_env(settings),
            "MERAK_WORKER_METRICS_PORT": str(settings.metrics_port(name)),
            "MERAK_NETWORK_ADDRESS": settings.grpc_address("network"),
        },
        marker="services.compute.worker",
    )


def _supervisor(settings: StackSettings) -> Component:
    return Component(
        name=SUPERVISOR,
        argv=(sys.executable, "-m", "merak_tools.supervise"),
        ports={},
        health=lambda: True,  # a process and its pid; it serves nothing
        env={"MERAK_STACK_SETTINGS": settings.model_dump_json()},
        # Matches `-m merak_tools.supervise` and the `-m merak.supervise` of a stack started before the
        # tools package existed, so `merak down` after an update still stops that supervisor.
        marker=".supervise",
    )


def components(settings: StackSettings, *, ovn: bool | None = None) -> list[Component]:
    """Every process of the local stack, in start order; OVN central when `ovn` (by default: when
    `ovn_off_reason` finds nothing against it)."""
    if ovn is None:
        ovn = not ovn_off_reason(settings)
    central = ovn_central(settings) if ovn else None
    ovn_parts = []
    if central is not None:
        ovn_parts = [_ovsdb(settings, central, "nb"), _ovsdb(settings, central, "sb"), _northd(central)]
    services = [_service(settings, name, central) for name in SERVICES]
    workers = [_worker(settings, name) for name in settings.worker_names]
    # The supervisor comes last: started when everything is up, stopped first by `down`.
    return [_redis(settings), _temporal(settings), *ovn_parts, *services, *workers, _supervisor(settings)]
