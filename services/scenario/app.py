"""Composition root of the scenario service: Redis, channels to topology/network/compute, managers, server."""

from __future__ import annotations

import redis.asyncio as aioredis

from merak.grpcclient import open_channel
from merak.grpcserver import GrpcServer, run_server
from merak.service import open_redis
from merak.v1 import compute_pb2_grpc, network_pb2_grpc, topology_pb2_grpc
from services.scenario.clients import ServiceClients
from services.scenario.config import ScenarioSettings
from services.scenario.entities import EntityManager
from services.scenario.manager import ScenarioManager
from services.scenario.server import ScenarioServicer, registration
from services.scenario.store import ScenarioStore


def build_servicer(
    redis: aioredis.Redis, clients: ServiceClients, settings: ScenarioSettings
) -> ScenarioServicer:
    """The servicer over a Redis client and the clients of the three services."""
    store = ScenarioStore(redis)
    return ScenarioServicer(EntityManager(store), ScenarioManager(store, clients, settings))


async def run(settings: ScenarioSettings) -> None:
    """Serve the scenario service until SIGTERM."""
    redis = await open_redis(settings.redis_url)
    channels = [
        open_channel(settings.topology_address),
        open_channel(settings.network_address),
        open_channel(settings.compute_address),
    ]
    topology, network, compute = channels
    clients = ServiceClients(
        topology_stub=topology_pb2_grpc.MerakTopologyServiceStub(topology),
        network_stub=network_pb2_grpc.MerakNetworkServiceStub(network),
        compute_stub=compute_pb2_grpc.MerakComputeServiceStub(compute),
        timeout=settings.call_timeout,
        topology_address=settings.topology_address,
        network_address=settings.network_address,
        compute_address=settings.compute_address,
    )

    async def close_channels() -> None:
        for channel in channels:
            await channel.close(None)

    server = GrpcServer(settings.listen_address(), [registration(build_servicer(redis, clients, settings))])
    await run_server(
        "scenario",
        server,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        grace=settings.shutdown_grace,
        cleanups=[close_channels, redis.aclose],
    )
