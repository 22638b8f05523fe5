"""Settings of the agent (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings
from services.agent.pings import MAX_PINGS_IN_FLIGHT


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
    # Ping and TestHandler requests served at once, each on a thread of the pings' own (not one of the
    # `workers`: pings waiting for silent destinations never hold up VM work); one more is refused with
    # RESOURCE_EXHAUSTED. Keep it above the scenario service's test_concurrency (32).
    max_pings_in_flight: int = Field(default=MAX_PINGS_IN_FLIGHT, ge=1)
    # Where the vhosts' OVN chassis keep their databases, sockets, pid files and logs (a directory per
    # vhost index). Default: `ovn/` beside the vhosts file.
    chassis_dir: Path | None = None
    # A group whose members may call an agent serving a unix socket (the socket becomes root:<gid>,
    # 0660), e.g. the compose file's uid-10001 worker and scenario service; -1: the owner only.
    socket_group: int = -1
