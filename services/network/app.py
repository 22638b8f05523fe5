"""Composition root of the network service: store, IPAM, plugins, manager, server; drain on SIGTERM."""

from __future__ import annotations

import redis.asyncio as aioredis

from merak.grpcserver import GrpcServer, run_server
from merak.service import open_redis
from services.network.config import NetworkSettings
from services.network.ipam import Ipam
from services.network.manager import NetworkManager
from services.network.plugins import PluginRegistry
from services.network.plugins.alcor import AlcorPlugin, AlcorPorts
from services.network.plugins.native import NativePlugin
from services.network.server import NetworkServicer, registration
from services.network.store import NetworkStore


def build_plugins(settings: NetworkSettings, store: NetworkStore) -> PluginRegistry:
    """Every plugin this process can use."""
    registry = PluginRegistry()
    registry.register(NativePlugin(store, vni_min=settings.vni_min, vni_max=settings.vni_max))
    registry.register(
        AlcorPlugin(
            ports=AlcorPorts(
                vpc=settings.alcor_vpc_port,
                subnet=settings.alcor_subnet_port,
                router=settings.alcor_router_port,
                node=settings.alcor_node_port,
                sg=settings.alcor_sg_port,
            ),
            timeout=settings.alcor_timeout,
            aca_port=settings.alcor_aca_port,
        )
    )
    return registry


def build_manager(settings: NetworkSettings, store: NetworkStore) -> NetworkManager:
    """The manager with its plugins and IPAM over `store`."""
    return NetworkManager(store, build_plugins(settings, store), Ipam(store))


def build_servicer(redis: aioredis.Redis, settings: NetworkSettings) -> NetworkServicer:
    """The servicer over a Redis client, for a server of one's own (tests, an embedding process)."""
    return NetworkServicer(build_manager(settings, NetworkStore(redis)))


async def run(settings: NetworkSettings) -> None:
    """Serve the network service until SIGTERM; network configs live in Redis across restarts."""
    redis = await open_redis(settings.redis_url)
    servicer = build_servicer(redis, settings)
    manager = servicer.manager
    await manager.load()
    server = GrpcServer(settings.listen_address(), [registration(servicer)])
    await run_server(
        "network",
        server,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        grace=settings.shutdown_grace,
        cleanups=[manager.plugins.close, redis.aclose],
    )
