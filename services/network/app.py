"""Composition root of the network service: build its dependencies, serve, drain on SIGTERM."""

from __future__ import annotations

from merak.grpcserver import GrpcServer, run_server
from merak.service import open_redis
from services.network.config import NetworkSettings
from services.network.server import NetworkServicer, registration


async def run(settings: NetworkSettings) -> None:
    """Serve the network service until SIGTERM."""
    redis = await open_redis(settings.redis_url)
    server = GrpcServer(settings.listen_address(), [registration(NetworkServicer())])
    await run_server(
        "network",
        server,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        grace=settings.shutdown_grace,
        cleanups=[redis.aclose],
    )
