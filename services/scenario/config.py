"""Settings of the scenario service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from merak.config import GRPC_PORTS, METRICS_PORTS, REST_PORT, ServiceSettings


class ScenarioSettings(ServiceSettings):
    """Settings of the scenario service."""

    grpc_port: int = GRPC_PORTS["scenario"]
    metrics_port: int = METRICS_PORTS["scenario"]
    # Merak's REST API; a negative port turns it off. Its host defaults to the gRPC host.
    rest_port: int = REST_PORT
    rest_host: str = ""
    # A bearer token the REST API (and its docs page) asks of every request: MERAK_REST_TOKEN, or the
    # first line of the file MERAK_REST_TOKEN_FILE names (a mounted Secret). Unset: no token asked.
    rest_token: SecretStr = SecretStr("")
    rest_token_file: Path | None = None
    topology_address: str = f"localhost:{GRPC_PORTS['topology']}"
    network_address: str = f"localhost:{GRPC_PORTS['network']}"
    compute_address: str = f"localhost:{GRPC_PORTS['compute']}"
    # Deadline of every call to topology, network and compute, in seconds (Merak's grpc_timeout).
    call_timeout: float = 600.0
    # How long DeleteScenario with teardown waits for compute to delete its VMs.
    teardown_timeout: float = 600.0
    # The most DeleteScenario with teardown takes, whatever state the lab is in (every call and wait of
    # it included); its last fifth is kept for deleting the lab (teardown.py).
    teardown_deadline: float = 900.0
    # How often WatchScenario asks the topology service while it deploys.
    watch_interval: float = 0.5
    # Connectivity test: default echo timeout and retry window, agent calls in flight, failures
    # listed in the report, and the most pairs one run may try.
    test_timeout: float = 1.0
    test_retry: float = 5.0
    test_concurrency: int = 32
    test_listed_failures: int = 20
    test_max_pairs: int = 1_000_000

    def rest_bearer_token(self) -> str:
        """The token the REST API asks for ("" when none), read once at start; a token file that is
        missing or empty stops the start, as a missing TLS file does."""
        given = self.rest_token.get_secret_value()
        if self.rest_token_file is None:
            return given
        if given:
            raise ValueError("MERAK_REST_TOKEN and MERAK_REST_TOKEN_FILE: set one of them")
        lines = self.rest_token_file.read_text().splitlines()
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"MERAK_REST_TOKEN_FILE {self.rest_token_file} holds no token")
        return token
