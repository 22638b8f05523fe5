"""Composition root of the scenario service: build its dependencies, serve, drain on SIGTERM."""

from __future__ import annotations

from merak.grpcserver import GrpcServer, run_server
from merak.service import open_redis
from services.scenario.config import ScenarioSettings
from services.scenario.server import ScenarioServicer, registration


async def run(settings: ScenarioSettings) -> None:
    """Serve the scenario service until SIGTERM."""
    redis = await open_redis(settings.redis_url)
    server = GrpcServer(settings.listen_address(), [registration(ScenarioServicer())])
    await run_server(
        "scenario",
        server,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        grace=settings.shutdown_grace,
        cleanups=[redis.aclose],
    )
