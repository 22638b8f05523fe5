"""Composition root of the agent: the vhosts it serves, its servicer; serve until SIGTERM."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from merak import netns
from merak.errors import FailedPrecondition
from merak.grpcserver import GrpcServer, run_server
from merak.host import HostTuner
from merak.logs import get_logger
from merak.metrics import serve_metrics
from services.agent.alcor import AlcorPorts
from services.agent.config import AgentSettings
from services.agent.planes import known_planes
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet

log = get_logger(__name__)


async def run(settings: AgentSettings) -> None:
    """Serve the agent until SIGTERM."""
    # Opened before entering a vhost namespace, so the metrics socket stays reachable on this machine.
    metrics = (
        serve_metrics(settings.metrics_port, settings.metrics_host) if settings.metrics_port >= 0 else None
    )
    # Built before entering a vhost namespace: the neighbour-table sysctls show only in the first one.
    host = HostTuner()
    if settings.netns:
        netns.enter_for_good(settings.netns)
    vhosts = VhostSet.load(settings.vhosts_file) if settings.vhosts_file else VhostSet.standalone()
    planes = known_planes()
    # An agent must not serve a broken vhost: a plane in the kernel needs the vhost's namespace.
    missing = vhosts.missing_namespaces() if planes.get(vhosts.dataplane).touches_kernel else []
    if missing:
        raise FailedPrecondition(f"vhost namespaces missing: {', '.join(missing[:5])}")
    alcor = AlcorPorts(settings.alcor_url) if settings.alcor_url else None
    servicer = AgentServicer(vhosts, alcor=alcor, workers=settings.workers, host=host, planes=planes)
    server = GrpcServer(settings.listen_address(), [registration(servicer)])

    async def mark_vhosts_serving() -> None:
        # One health entry per vhost, so a caller can ask about the vhost it cares about.
        for name in vhosts.vhosts:
            await server.health.set(f"vhost/{name}", health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "agent_vhosts",
            vhosts=len(vhosts.vhosts),
            dataplane=vhosts.dataplane,
            netns=settings.netns,
            mode="alcor" if alcor else "native",
        )

    await run_server(
        "agent",
        server,
        metrics_port=None,
        metrics_server=metrics,
        grace=settings.shutdown_grace,
        on_started=mark_vhosts_serving,
        cleanups=[servicer.close],
    )
