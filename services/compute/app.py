"""Composition root of the compute service: store, Temporal, network client, manager, optional worker."""

from __future__ import annotations

import asyncio

from merak.grpcclient import open_channel
from merak.grpcserver import GrpcServer, run_server
from merak.service import open_redis
from merak.temporal import TemporalConnection
from merak.v1 import network_pb2_grpc
from services.compute.config import ComputeSettings
from services.compute.manager import ComputeManager
from services.compute.server import ComputeServicer, registration
from services.compute.store import ComputeStore
from services.compute.worker import run_worker


async def run(settings: ComputeSettings) -> None:
    """Serve the compute service until SIGTERM (with an in-process worker when asked)."""
    redis = await open_redis(settings.redis_url)
    temporal = TemporalConnection(settings.temporal_address, settings.temporal_namespace)
    temporal.start()
    network_channel = open_channel(settings.network_address)
    store = ComputeStore(redis)
    manager = ComputeManager(
        store, temporal, network_pb2_grpc.MerakNetworkServiceStub(network_channel), settings
    )
    stop_worker = asyncio.Event()
    worker = None
    if settings.run_worker:

        async def embedded_worker() -> None:
            await run_worker(settings, await temporal.client(timeout=3600), store, stop_worker)

        worker = asyncio.create_task(embedded_worker())

    async def stop_embedded_worker() -> None:
        stop_worker.set()
        if worker is not None:
            await worker

    gauges = asyncio.create_task(manager.refresh_gauges_forever())

    async def stop_gauges() -> None:
        gauges.cancel()

    async def close_network() -> None:
        await network_channel.close(None)

    server = GrpcServer(settings.listen_address(), [registration(ComputeServicer(manager))])
    await run_server(
        "compute",
        server,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        grace=settings.shutdown_grace,
        cleanups=[stop_gauges, stop_embedded_worker, close_network, temporal.close, redis.aclose],
    )
