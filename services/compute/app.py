"""Composition root of compute, for the service and for the worker: each is built first, then served.

The service: Redis, the Temporal connection, the network client, the manager, the server (and, with
`MERAK_RUN_WORKER`, a worker in the same process). The worker process (`python -m
services.compute.worker`): Redis, a Temporal client, the network client, the activities, the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CollectorRegistry
from temporalio.client import Client
from temporalio.worker import Worker

from merak.grpcclient import open_channel
from merak.grpcserver import GrpcServer
from merak.logs import get_logger
from merak.service import BuiltProcess, BuiltService, Teardown, open_redis, serve
from merak.temporal import TemporalConnection, connect_temporal
from merak.v1 import network_pb2_grpc, topology_pb2_grpc
from services.compute.activities import ComputeActivities, all_activities
from services.compute.config import ComputeSettings
from services.compute.manager import ComputeManager
from services.compute.metrics import ComputeMetrics, WorkerMetrics
from services.compute.server import ComputeServicer, registration
from services.compute.store import ComputeStore
from services.compute.workflows import DeployComputeWorkflow, HostShardWorkflow

log = get_logger(__name__)


@dataclass
class ComputeWorker:
    """A Temporal worker on the compute task queue with its activities; `run` until `stop` is set."""

    worker: Worker
    activities: ComputeActivities
    settings: ComputeSettings
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Poll the task queue until `stop` is set, then let running activities finish."""
        log.info(
            "compute_worker_started",
            task_queue=self.settings.task_queue,
            concurrency=self.settings.concurrency,
        )
        try:
            async with self.worker:
                await self.stop.wait()
        finally:
            await self.activities.close()
        log.info("compute_worker_stopped")


def build_worker(
    settings: ComputeSettings,
    client: Client,
    store: ComputeStore,
    network: network_pb2_grpc.MerakNetworkServiceAsyncStub,
    registry: CollectorRegistry,
) -> ComputeWorker:
    """The activities and a worker with the knobs of Merak's worker (without its parsing bugs)."""
    activities = ComputeActivities(
        store,
        network,
        WorkerMetrics.create(registry),
        agent_timeout=settings.agent_timeout,
        alcor_goalstate_timeout=settings.alcor_goalstate_timeout,
    )
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[DeployComputeWorkflow, HostShardWorkflow],
        activities=list(all_activities(activities)),  # type: ignore[arg-type]  # bound methods are callables
        max_concurrent_activities=settings.concurrency,
        max_concurrent_workflow_tasks=settings.concurrent_workflows,
        max_activities_per_second=settings.activities_per_second or None,
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace),
    )
    return ComputeWorker(worker, activities, settings)


async def build(settings: ComputeSettings) -> BuiltService[ComputeManager]:
    """The compute service; its gauge loop and optional worker start once it serves."""
    registry = CollectorRegistry()
    teardown = Teardown("compute")
    async with teardown.on_error():
        redis = await open_redis(settings.redis_url)
        teardown.add(redis.aclose)
        temporal = TemporalConnection(settings.temporal_address, settings.temporal_namespace)
        temporal.start()
        teardown.add(temporal.close)
        network_channel = open_channel(settings.network_address)
        teardown.add(functools.partial(network_channel.close, None))
        topology_channel = open_channel(settings.topology_address)
        teardown.add(functools.partial(topology_channel.close, None))
        network = network_pb2_grpc.MerakNetworkServiceStub(network_channel)
        store = ComputeStore(redis)
        manager = ComputeManager(
            store,
            temporal,
            network,
            settings,
            ComputeMetrics.create(registry),
            topology=topology_pb2_grpc.MerakTopologyServiceStub(topology_channel),
        )
        background: dict[str, asyncio.Task[None]] = {}
        stop_worker = asyncio.Event()

        async def start_background() -> None:
            background["gauges"] = asyncio.create_task(manager.refresh_gauges_forever())
            if settings.run_worker:

                async def embedded_worker() -> None:
                    client = await temporal.client(timeout=3600)
                    worker = build_worker(settings, client, store, network, registry)
                    worker.stop = stop_worker
                    await worker.run()

                background["worker"] = asyncio.create_task(embedded_worker())

        async def stop_background() -> None:
            stop_worker.set()  # the worker drains its running activities; the gauge loop just stops
            if "gauges" in background:
                background["gauges"].cancel()
            for task in background.values():
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        teardown.add(stop_background)
        server = GrpcServer(settings.listen_address(), [registration(ComputeServicer(manager))], registry)
        return BuiltService(
            name="compute", server=server, root=manager, teardown=teardown, on_started=start_background
        )


async def run(settings: ComputeSettings) -> None:
    """Serve the compute service until SIGTERM (with an in-process worker when asked)."""
    await serve(await build(settings), settings)


async def build_worker_process(settings: ComputeSettings) -> BuiltProcess[ComputeWorker]:
    """The worker process: Redis, a Temporal client, the network client, the worker as its main task."""
    registry = CollectorRegistry()
    teardown = Teardown("compute-worker")
    async with teardown.on_error():
        redis = await open_redis(settings.redis_url)
        teardown.add(redis.aclose)
        client = await connect_temporal(settings.temporal_address, settings.temporal_namespace)
        channel = open_channel(settings.network_address)
        teardown.add(functools.partial(channel.close, None))
        network = network_pb2_grpc.MerakNetworkServiceStub(channel)
        worker = build_worker(settings, client, ComputeStore(redis), network, registry)

        async def main(stop: asyncio.Event) -> None:
            worker.stop = stop
            await worker.run()

        return BuiltProcess(
            name="compute-worker",
            root=worker,
            teardown=teardown,
            main=main,
            metrics_port=settings.worker_metrics_port,
            registry=registry,
        )


async def run_worker_process(settings: ComputeSettings) -> None:
    """Run the worker until SIGTERM (its running activities finish), through the services' lifecycle."""
    await serve(await build_worker_process(settings), settings)
