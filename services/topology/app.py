"""Composition root of the topology service: build its dependencies, serve, drain on SIGTERM."""

from __future__ import annotations

from merak.grpcserver import GrpcServer, run_server
from merak.service import open_redis
from services.topology.config import TopologySettings
from services.topology.server import TopologyServicer, registration


async def run(settings: TopologySettings) -> None:
    """Serve the topology service until SIGTERM."""
    redis = await open_redis(settings.redis_url)
    server = GrpcServer(settings.listen_address(), [registration(TopologyServicer())])
    await run_server(
        "topology",
        server,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        grace=settings.shutdown_grace,
        cleanups=[redis.aclose],
    )
