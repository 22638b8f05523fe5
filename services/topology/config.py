"""Settings of the topology service (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings


class TopologySettings(ServiceSettings):
    """Settings of the topology service."""

    grpc_port: int = GRPC_PORTS["topology"]
    metrics_port: int = METRICS_PORTS["topology"]
