"""What the local stack starts: Redis, the Temporal dev server, the services, the compute workers and the
supervisor, each a `Component` with its command line, ports and health check."""

from __future__ import annotations

import shutil
import socket
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from merak.config import TEMPORAL_NAMESPACE
from merak.grpcclient import health_serving_blocking
from merak.temporal import temporal_cli_path
from merak_tools.localstack.settings import SERVICES, StackSettings

TEMPORAL_HEALTH_SERVICE = "temporal.api.workflowservice.v1.WorkflowService"
# Restarts the components that die (merak_tools.supervise).
SUPERVISOR = "supervisor"


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


def redis_healthy(port: int) -> bool:
    """True when Redis answers PING on `port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """True when `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _service_health(address: str) -> Callable[[], bool]:
    return lambda: health_serving_blocking(address)


def _redis(settings: StackSettings) -> Component:
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    return Component(
        name="redis",
        argv=(
            redis_server,
            "--port",
            str(settings.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(settings.state_dir / "redis"),
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


def _temporal(settings: StackSettings) -> Component:
    return Component(
        name="temporal",
        argv=(
            str(temporal_cli_path()),
            "server",
            "start-dev",
            "--db-filename",
            str(settings.state_dir / "temporal" / "temporal.db"),
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
    }


def _service(settings: StackSettings, name: str) -> Component:
    env = {
        **_common_env(settings),
        "MERAK_GRPC_PORT": str(settings.grpc_port(name)),
        "MERAK_METRICS_PORT": str(settings.metrics_port(name)),
    }
    ports = {"grpc": settings.grpc_port(name), "metrics": settings.metrics_port(name)}
    if name in ("compute", "scenario"):
        env["MERAK_NETWORK_ADDRESS"] = settings.grpc_address("network")
        env["MERAK_TOPOLOGY_ADDRESS"] = settings.grpc_address("topology")
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


def components(settings: StackSettings) -> list[Component]:
    """Every process of the local stack, in start order."""
    services = [_service(settings, name) for name in SERVICES]
    workers = [_worker(settings, name) for name in settings.worker_names]
    # The supervisor comes last: started when everything is up, stopped first by `down`.
    return [_redis(settings), _temporal(settings), *services, *workers, _supervisor(settings)]
