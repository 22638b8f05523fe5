"""Settings of the scenario service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings


class ScenarioSettings(ServiceSettings):
    """Settings of the scenario service."""

    grpc_port: int = GRPC_PORTS["scenario"]
    metrics_port: int = METRICS_PORTS["scenario"]
