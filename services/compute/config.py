"""Settings of the compute service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings


class ComputeSettings(ServiceSettings):
    """Settings of the compute service."""

    grpc_port: int = GRPC_PORTS["compute"]
    metrics_port: int = METRICS_PORTS["compute"]
