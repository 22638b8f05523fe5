"""Settings of the agent service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings


class AgentSettings(ServiceSettings):
    """Settings of the agent service."""

    grpc_port: int = GRPC_PORTS["agent"]
    metrics_port: int = METRICS_PORTS["agent"]
