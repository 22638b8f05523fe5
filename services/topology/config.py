"""Settings of the topology service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from pathlib import Path

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings


class TopologySettings(ServiceSettings):
    """Settings of the topology service."""

    grpc_port: int = GRPC_PORTS["topology"]
    metrics_port: int = METRICS_PORTS["topology"]
    # Where the local backend keeps agent sockets, pid files and logs (default: <state_dir>/run/topologies).
    run_dir: Path | None = None
    # Up to this many vhosts, each vhost gets its own agent inside its namespace; beyond, agents serve groups.
    max_agents: int = 16
    # With dataplane: fake, one agent process per this many vhosts.
    fake_vhosts_per_agent: int = 25_000
    # Threads doing netlink work (each enters the namespace it works on).
    netns_workers: int = 4

    def topology_run_dir(self) -> Path:
        """The local backend's run directory."""
        return self.run_dir or self.state_dir / "run" / "topologies"
