"""Composition root of the topology service: store, backends, manager, server; drain on SIGTERM."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from merak.grpcserver import GrpcServer
from merak.host import HostTuner
from merak.service import BuiltService, Teardown, open_redis, serve
from merak.v1 import topology_pb2
from services.topology.backends import BackendRegistry
from services.topology.backends.kubernetes import ImageLookup, KubernetesBackend, KubernetesOptions, Resources
from services.topology.backends.local import LocalBackend
from services.topology.backends.local.lablogs import LabLogs
from services.topology.config import TopologySettings
from services.topology.manager import TopologyManager
from services.topology.metrics import TopologyMetrics
from services.topology.server import TopologyServicer, registration
from services.topology.store import TopologyStore


def build_backends(
    settings: TopologySettings, store: TopologyStore | None = None, metrics: TopologyMetrics | None = None
) -> BackendRegistry:
    """Every backend this process can use; each is built on first use (no cluster needed until then)."""
    registry = BackendRegistry()
    registry.register(
        "local",
        lambda: LocalBackend(
            settings.topology_run_dir(),
            max_agents=settings.max_agents,
            fake_vhosts_per_agent=settings.fake_vhosts_per_agent,
            workers=settings.netns_workers,
            agent_env={
                "MERAK_STATE_DIR": str(settings.state_dir),
                "MERAK_LOG_LEVEL": settings.log_level,
                # The Alcors a port request may name: the agents check them again (defence in depth).
                "MERAK_CONTROL_PLANE_ALLOW": settings.control_plane_allow,
            },
            host=HostTuner(),
            stack_run_dir=settings.state_dir / "run",
            metrics=metrics,
            lab_logs=LabLogs(settings.lab_logs_dir(), settings.lab_logs_kept),
        ),
    )
    registry.register(
        "kubernetes",
        lambda: KubernetesBackend(
            kubernetes_options(settings), images=_stored_images(store) if store is not None else None
        ),
    )
    return registry


def kubernetes_options(settings: TopologySettings) -> KubernetesOptions:
    """The kubernetes backend's options from the `MERAK_KUBERNETES_*` settings."""
    return KubernetesOptions(
        kubeconfig=settings.kubeconfig,
        context=settings.kubernetes_context,
        namespace_prefix=settings.kubernetes_namespace_prefix,
        vhost_image=settings.kubernetes_vhost_image,
        switch_image=settings.kubernetes_switch_image,
        image_pull_policy=settings.kubernetes_image_pull_policy,
        vhost_resources=Resources(
            settings.kubernetes_vhost_cpu,
            settings.kubernetes_vhost_memory,
            settings.kubernetes_vhost_cpu_limit,
            settings.kubernetes_vhost_memory_limit,
        ),
        switch_resources=Resources(
            settings.kubernetes_switch_cpu,
            settings.kubernetes_switch_memory,
            settings.kubernetes_switch_cpu_limit,
            settings.kubernetes_switch_memory_limit,
        ),
        agent_env={
            "MERAK_LOG_LEVEL": settings.log_level,
            "MERAK_CONTROL_PLANE_ALLOW": settings.control_plane_allow,
            **settings.kubernetes_agent_env,
        },
        max_vhosts=settings.kubernetes_max_vhosts,
        ready_timeout=settings.kubernetes_ready_timeout,
        delete_timeout=settings.kubernetes_delete_timeout,
        poll_interval=settings.kubernetes_poll_interval,
        api_workers=settings.kubernetes_api_workers,
        request_timeout=settings.kubernetes_request_timeout,
    )


def _stored_images(store: TopologyStore) -> ImageLookup:
    """The `images` of a stored topology config (the backend sees the generated graph, not the request)."""

    async def images(topology_id: str) -> Sequence[topology_pb2.InternalTopologyImage]:
        record = await store.get(topology_id)
        return list(record.config.images) if record is not None else []

    return images


async def build(settings: TopologySettings) -> BuiltService[TopologyManager]:
    """Redis, the backends, the manager (resuming the topologies Redis knows), the server."""
    registry = CollectorRegistry()
    teardown = Teardown("topology")
    async with teardown.on_error():
        redis = await open_redis(settings.redis_url)
        teardown.add(redis.aclose)
        store = TopologyStore(redis)
        metrics = TopologyMetrics.create(registry)
        backends = build_backends(settings, store, metrics)
        teardown.add(backends.close)
        manager = TopologyManager(store, backends, metrics, settings.default_backend)
        teardown.add(manager.close)
        await manager.resume()
        server = GrpcServer(settings.listen_address(), [registration(TopologyServicer(manager))], registry)
        return BuiltService(name="topology", server=server, root=manager, teardown=teardown)


async def run(settings: TopologySettings) -> None:
    """Serve the topology service until SIGTERM; running topologies stay up across restarts."""
    await serve(await build(settings), settings)
