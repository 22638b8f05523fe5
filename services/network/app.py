"""Composition root of the network service: store, IPAM, plugins, manager, server; drain on SIGTERM."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from merak.grpcserver import GrpcServer
from merak.service import BuiltService, Teardown, open_redis, serve
from services.network.config import NetworkSettings
from services.network.ipam import Ipam
from services.network.manager import NetworkManager
from services.network.metrics import NetworkMetrics
from services.network.plugins import PluginRegistry
from services.network.plugins.alcor import AlcorPlugin, AlcorPorts
from services.network.plugins.native import NativePlugin
from services.network.plugins.ovn import OvnPlugin
from services.network.server import NetworkServicer, registration
from services.network.store import NetworkStore


def build_plugins(settings: NetworkSettings, store: NetworkStore, metrics: NetworkMetrics) -> PluginRegistry:
    """Every plugin this process can use."""
    registry = PluginRegistry()
    control_plane = settings.control_plane()
    registry.register(NativePlugin(store, metrics, vni_min=settings.vni_min, vni_max=settings.vni_max))
    registry.register(
        AlcorPlugin(
            metrics,
            ports=AlcorPorts(
                vpc=settings.alcor_vpc_port,
                subnet=settings.alcor_subnet_port,
                router=settings.alcor_router_port,
                node=settings.alcor_node_port,
                sg=settings.alcor_sg_port,
            ),
            timeout=settings.alcor_timeout,
            aca_port=settings.alcor_aca_port,
            control_plane=control_plane,
        )
    )
    registry.register(
        OvnPlugin(
            metrics,
            nb=settings.ovn_nb,
            sb=settings.ovn_sb,
            timeout=settings.ovn_timeout,
            control_plane=control_plane,
        )
    )
    return registry


async def build(settings: NetworkSettings) -> BuiltService[NetworkManager]:
    """Redis, the plugins, the IPAM and the manager (its counts loaded from Redis), the server."""
    registry = CollectorRegistry()
    metrics = NetworkMetrics.create(registry)
    teardown = Teardown("network")
    async with teardown.on_error():
        redis = await open_redis(settings.redis_url)
        teardown.add(redis.aclose)
        store = NetworkStore(redis)
        plugins = build_plugins(settings, store, metrics)
        teardown.add(plugins.close)
        manager = NetworkManager(store, plugins, Ipam(store, metrics), metrics)
        await manager.load()
        server = GrpcServer(settings.listen_address(), [registration(NetworkServicer(manager))], registry)
        return BuiltService(name="network", server=server, root=manager, teardown=teardown)


async def run(settings: NetworkSettings) -> None:
    """Serve the network service until SIGTERM; network configs live in Redis across restarts."""
    await serve(await build(settings), settings)
