"""Composition root of the compute service: build its dependencies, serve, drain on SIGTERM."""

from __future__ import annotations

from merak.grpcserver import GrpcServer, run_server
from merak.service import open_redis
from services.compute.config import ComputeSettings
from services.compute.server import ComputeServicer, registration


async def run(settings: ComputeSettings) -> None:
    """Serve the compute service until SIGTERM."""
    redis = await open_redis(settings.redis_url)
    server = GrpcServer(settings.listen_address(), [registration(ComputeServicer())])
    await run_server(
        "compute",
        server,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        grace=settings.shutdown_grace,
        cleanups=[redis.aclose],
    )
