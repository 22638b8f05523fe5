"""Composition root of the scenario service: Redis, clients of the other services, managers, gRPC + REST."""

from __future__ import annotations

import asyncio
import functools

from prometheus_client import CollectorRegistry

from merak.grpcclient import open_channel
from merak.grpcserver import GrpcServer
from merak.service import BuiltService, Teardown, open_redis, serve
from merak.tls import TlsFiles
from merak.v1 import compute_pb2_grpc, network_pb2_grpc, topology_pb2_grpc
from services.scenario.clients import ServiceClients
from services.scenario.config import ScenarioSettings
from services.scenario.entities import EntityManager
from services.scenario.manager import ScenarioManager
from services.scenario.metrics import ScenarioMetrics
from services.scenario.rest.app import create_app
from services.scenario.rest.server import RestServer
from services.scenario.server import ScenarioServicer, registration
from services.scenario.store import ScenarioStore


async def build(settings: ScenarioSettings) -> BuiltService[ScenarioManager]:
    """Redis, the clients of topology, network and compute, the managers, the server."""
    registry = CollectorRegistry()
    teardown = Teardown("scenario")
    async with teardown.on_error():
        redis = await open_redis(settings.redis_url)
        teardown.add(redis.aclose)
        topology = open_channel(settings.topology_address)
        network = open_channel(settings.network_address)
        compute = open_channel(settings.compute_address)
        for channel in (topology, network, compute):
            teardown.add(functools.partial(channel.close, None))
        clients = ServiceClients(
            topology_stub=topology_pb2_grpc.MerakTopologyServiceStub(topology),
            network_stub=network_pb2_grpc.MerakNetworkServiceStub(network),
            compute_stub=compute_pb2_grpc.MerakComputeServiceStub(compute),
            timeout=settings.call_timeout,
            topology_address=settings.topology_address,
            network_address=settings.network_address,
            compute_address=settings.compute_address,
        )
        store = ScenarioStore(redis)
        entities = EntityManager(store)
        manager = ScenarioManager(store, clients, settings, ScenarioMetrics.create(registry))
        teardown.add(manager.close)
        server = GrpcServer(
            settings.listen_address(), [registration(ScenarioServicer(entities, manager))], registry
        )
        background: list[asyncio.Task[list[str]]] = []

        async def stop_reconcile() -> None:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

        teardown.add(stop_reconcile)
        built = BuiltService(name="scenario", server=server, root=manager, teardown=teardown)
        rest = None
        if settings.rest_port >= 0:
            tls = TlsFiles.current()
            rest = RestServer(
                create_app(entities, manager, settings.rest_bearer_token()),
                settings.rest_host or settings.host,
                settings.rest_port,
                tls.server_ssl_context() if tls is not None else None,
            )
            teardown.add(rest.stop)
            built.listeners["rest"] = rest.address

        async def started() -> None:
            if rest is not None:
                await rest.start()
            # Scenarios whose labs went away while we were down stop saying they are deployed.
            background.append(asyncio.create_task(manager.reconcile(), name="scenario-reconcile"))

        built.on_started = started
        return built


async def run(settings: ScenarioSettings) -> None:
    """Serve the scenario service until SIGTERM."""
    await serve(await build(settings), settings)
