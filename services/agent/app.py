"""Composition root of the agent: serve the agent API (TCP or unix socket), drain on SIGTERM."""

from __future__ import annotations

from merak.grpcserver import GrpcServer, run_server
from services.agent.config import AgentSettings
from services.agent.server import AgentServicer, registration


async def run(settings: AgentSettings) -> None:
    """Serve the agent until SIGTERM."""
    server = GrpcServer(settings.listen_address(), [registration(AgentServicer())])
    await run_server(
        "agent",
        server,
        metrics_port=settings.metrics_port if settings.metrics_port >= 0 else None,
        metrics_host=settings.metrics_host,
        grace=settings.shutdown_grace,
    )
