"""Composition root of the topology service: store, backends, manager, server; drain on SIGTERM."""

from __future__ import annotations

from merak.grpcserver import GrpcServer, run_server
from merak.service import open_redis
from services.topology.backends import BackendRegistry
from services.topology.backends.local import LocalBackend
from services.topology.config import TopologySettings
from services.topology.manager import TopologyManager
from services.topology.server import TopologyServicer, registration
from services.topology.store import TopologyStore


def build_backends(settings: TopologySettings) -> BackendRegistry:
    """Every backend this process can use."""
    registry = BackendRegistry()
    registry.register(
        "local",
        lambda: LocalBackend(
            settings.topology_run_dir(),
            max_agents=settings.max_agents,
            fake_vhosts_per_agent=settings.fake_vhosts_per_agent,
            workers=settings.netns_workers,
            agent_env={"MERAK_STATE_DIR": str(settings.state_dir), "MERAK_LOG_LEVEL": settings.log_level},
        ),
    )
    return registry


async def run(settings: TopologySettings) -> None:
    """Serve the topology service until SIGTERM; running topologies stay up across restarts."""
    redis = await open_redis(settings.redis_url)
    backends = build_backends(settings)
    manager = TopologyManager(TopologyStore(redis), backends)
    await manager.resume()
    server = GrpcServer(settings.listen_address(), [registration(TopologyServicer(manager))])
    await run_server(
        "topology",
        server,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        grace=settings.shutdown_grace,
        cleanups=[manager.close, backends.close, redis.aclose],
    )
