"""Settings of the network service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings


class NetworkSettings(ServiceSettings):
    """Settings of the network service."""

    grpc_port: int = GRPC_PORTS["network"]
    metrics_port: int = METRICS_PORTS["network"]
