"""Settings of the agent (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from pathlib import Path

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings


class AgentSettings(ServiceSettings):
    """Settings of the agent."""

    grpc_port: int = GRPC_PORTS["agent"]
    metrics_port: int = METRICS_PORTS["agent"]
    # The vhosts this agent serves (JSON written by the topology service); none: a standalone agent.
    vhosts_file: Path | None = None
    # A network namespace to run in (the vhost's own, when the agent serves one vhost).
    netns: str = ""
    # Alcor mode (as Merak's default): the port manager's base URL, e.g. http://10.0.0.5:30006.
    # Empty: native mode, where addresses come from our network service.
    alcor_url: str = ""
    # Threads doing kernel work (each enters the namespace it works on).
    workers: int = 4
    # Where the vhosts' OVN chassis keep their databases, sockets, pid files and logs (a directory per
    # vhost index). Default: `ovn/` beside the vhosts file.
    chassis_dir: Path | None = None
