"""Settings of the scenario service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from merak.config import GRPC_PORTS, METRICS_PORTS, REST_PORT, ServiceSettings


class ScenarioSettings(ServiceSettings):
    """Settings of the scenario service."""

    grpc_port: int = GRPC_PORTS["scenario"]
    metrics_port: int = METRICS_PORTS["scenario"]
    # Merak's REST API; a negative port turns it off. Its host defaults to the gRPC host.
    rest_port: int = REST_PORT
    rest_host: str = ""
    topology_address: str = f"localhost:{GRPC_PORTS['topology']}"
    network_address: str = f"localhost:{GRPC_PORTS['network']}"
    compute_address: str = f"localhost:{GRPC_PORTS['compute']}"
    # Deadline of every call to topology, network and compute, in seconds (Merak's grpc_timeout).
    call_timeout: float = 600.0
    # How long DeleteScenario with teardown waits for compute to delete its VMs.
    teardown_timeout: float = 600.0
    # How often WatchScenario asks the topology service while it deploys.
    watch_interval: float = 0.5
    # Connectivity test: default echo timeout and retry window, agent calls in flight, failures
    # listed in the report, and the most pairs one run may try.
    test_timeout: float = 1.0
    test_retry: float = 5.0
    test_concurrency: int = 32
    test_listed_failures: int = 20
    test_max_pairs: int = 1_000_000
