"""Settings of the topology service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings


class TopologySettings(ServiceSettings):
    """Settings of the topology service."""

    grpc_port: int = GRPC_PORTS["topology"]
    metrics_port: int = METRICS_PORTS["topology"]
    # The backend of topologies whose config names none ("local", or "kubernetes" on a cluster).
    default_backend: str = "local"
    # Where the local backend keeps agent sockets, pid files and logs (default: <state_dir>/run/topologies).
    run_dir: Path | None = None
    # Where a deleted lab's agent and OVN chassis logs are kept, a directory per lab named
    # <UTC time>-<short id> (default: <state_dir>/logs/labs, beside the local stack's own logs).
    lab_log_dir: Path | None = None
    # How many deleted labs' logs are kept there (the oldest go first); 0: a lab's logs go with it.
    lab_logs_kept: int = Field(default=20, ge=0)
    # Up to this many vhosts, each vhost gets its own agent inside its namespace; beyond, agents serve groups.
    max_agents: int = 16
    # With dataplane: fake, one agent process per this many vhosts.
    fake_vhosts_per_agent: int = 25_000
    # Threads doing netlink work (each enters the namespace it works on).
    netns_workers: int = 4

    # --- kubernetes backend (built on first use: a service without a cluster never touches these) ---
    # A kubeconfig file; empty: in-cluster credentials inside a pod, else $KUBECONFIG or ~/.kube/config.
    kubeconfig: str = ""
    # A context of that kubeconfig; empty: its current context.
    kubernetes_context: str = ""
    # Each topology gets the namespace <prefix><short id>, e.g. merak-3f9a1c.
    kubernetes_namespace_prefix: str = "merak-"
    # The image of vhost pods (it runs the agent) and of switch pods (any image with sh and iproute2;
    # empty: the vhost image). A topology config's `images` override both (see the README).
    kubernetes_vhost_image: str = "merak:latest"
    kubernetes_switch_image: str = ""
    kubernetes_image_pull_policy: str = "IfNotPresent"
    # Requests and limits of every vhost and switch pod ("" leaves that one out).
    kubernetes_vhost_cpu: str = "100m"
    kubernetes_vhost_memory: str = "128Mi"
    kubernetes_vhost_cpu_limit: str = ""
    kubernetes_vhost_memory_limit: str = "1Gi"
    kubernetes_switch_cpu: str = "10m"
    kubernetes_switch_memory: str = "16Mi"
    kubernetes_switch_cpu_limit: str = ""
    kubernetes_switch_memory_limit: str = "128Mi"
    # Extra environment of every agent pod, e.g. {"MERAK_ALCOR_URL": "http://10.0.0.5:30006"} (JSON).
    kubernetes_agent_env: dict[str, str] = Field(default_factory=dict)
    # One pod per vhost: a bound that keeps a typo from asking the cluster for a million pods.
    kubernetes_max_vhosts: int = 5_000
    # Seconds until every pod of a topology must be ready, and until a deleted namespace must be gone.
    kubernetes_ready_timeout: float = 900.0
    kubernetes_delete_timeout: float = 300.0
    # Seconds between two reads of the pods while waiting.
    kubernetes_poll_interval: float = 2.0
    # Concurrent API calls (pod creation is the bulk of a deployment), and the timeout of each.
    kubernetes_api_workers: int = 16
    kubernetes_request_timeout: float = 30.0

    def topology_run_dir(self) -> Path:
        """The local backend's run directory."""
        return self.run_dir or self.state_dir / "run" / "topologies"

    def lab_logs_dir(self) -> Path:
        """Where deleted labs' logs are kept."""
        return self.lab_log_dir or self.state_dir / "logs" / "labs"
