"""The compute Temporal worker: `python -m services.compute.worker`, or inside the compute process."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from merak.config import METRICS_PORTS
from merak.grpcclient import open_channel
from merak.grpcserver import wait_for_signal
from merak.logs import get_logger
from merak.metrics import serve_metrics
from merak.service import main_for, open_redis
from merak.temporal import connect_temporal
from merak.v1 import network_pb2_grpc
from services.compute.activities import ComputeActivities, all_activities
from services.compute.config import ComputeSettings
from services.compute.store import ComputeStore
from services.compute.workflows import DeployComputeWorkflow, HostShardWorkflow

log = get_logger(__name__)


def build_worker(client: Client, activities: ComputeActivities, settings: ComputeSettings) -> Worker:
    """A worker on the compute task queue with the knobs of Merak's worker (without its parsing bugs)."""
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[DeployComputeWorkflow, HostShardWorkflow],
        activities=list(all_activities(activities)),  # type: ignore[arg-type]  # bound methods are callables
        max_concurrent_activities=settings.concurrency,
        max_concurrent_workflow_tasks=settings.concurrent_workflows,
        max_activities_per_second=settings.activities_per_second or None,
        graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace),
    )


async def run_worker(
    settings: ComputeSettings, client: Client, store: ComputeStore, stop: asyncio.Event
) -> None:
    """Run a worker until `stop` is set, then let running activities finish."""
    async with open_channel(settings.network_address) as channel:
        activities = ComputeActivities(
            store, network_pb2_grpc.MerakNetworkServiceStub(channel), agent_timeout=settings.agent_timeout
        )
        worker = build_worker(client, activities, settings)
        log.info("compute_worker_started", task_queue=settings.task_queue, concurrency=settings.concurrency)
        try:
            async with worker:
                await stop.wait()
        finally:
            await activities.close()
        log.info("compute_worker_stopped")


async def run(settings: ComputeSettings) -> None:
    """The worker process: metrics, Redis, Temporal; serve until SIGTERM."""
    metrics = serve_metrics(settings.worker_metrics_port, settings.metrics_host)
    redis = await open_redis(settings.redis_url)
    client = await connect_temporal(settings.temporal_address, settings.temporal_namespace)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, client, ComputeStore(redis), stop))
    signal_or_exit = asyncio.create_task(wait_for_signal())
    await asyncio.wait({worker, signal_or_exit}, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    signal_or_exit.cancel()
    await worker
    await redis.aclose()
    metrics.stop()


class WorkerSettings(ComputeSettings):
    """The worker process's settings (same variables as the compute service)."""

    worker_metrics_port: int = METRICS_PORTS["compute-worker"]


def main() -> None:
    """Console script `merak-compute-worker`."""
    main_for("compute-worker", WorkerSettings, run)


if __name__ == "__main__":
    main()
