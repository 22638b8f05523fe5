"""Composition root of the agent: the vhosts it serves, its servicer; serve until SIGTERM."""

from __future__ import annotations

import os

from grpc_health.v1 import health_pb2
from prometheus_client import CollectorRegistry

from merak import netns
from merak.errors import FailedPrecondition
from merak.grpcserver import GrpcServer
from merak.host import HostTuner
from merak.logs import get_logger
from merak.metrics import serve_metrics
from merak.service import BuiltService, Teardown, serve
from services.agent.alcor import AlcorPorts
from services.agent.config import AgentSettings
from services.agent.goalstate.provisioner import GoalStateProvisionerServicer
from services.agent.goalstate.provisioner import registration as goalstate_registration
from services.agent.metrics import AgentMetrics
from services.agent.planes import known_planes
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet

log = get_logger(__name__)


async def build(settings: AgentSettings) -> BuiltService[AgentServicer]:
    """The vhosts this agent serves, their planes, the servicer, the server.

    The metrics endpoint and the host tuner are opened first, in this machine's namespace: the agent
    then moves into its vhost's namespace for good (when it serves one vhost).
    """
    registry = CollectorRegistry()
    teardown = Teardown("agent")
    async with teardown.on_error():
        metrics_server = (
            serve_metrics(settings.metrics_port, settings.metrics_host, registry)
            if settings.metrics_port >= 0
            else None
        )
        # This namespace is the machine's: the only one that shows the neighbour-table sysctls, and the
        # management network where the control plane under test answers.
        management = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        teardown.add_sync(lambda: os.close(management))
        host = HostTuner(netns_fd=management)
        if settings.netns:
            netns.enter_for_good(settings.netns)
        vhosts = VhostSet.load(settings.vhosts_file) if settings.vhosts_file else VhostSet.standalone()
        planes = known_planes()
        # An agent must not serve a broken vhost: a plane in the kernel needs the vhost's namespace.
        missing = vhosts.missing_namespaces() if planes.get(vhosts.dataplane).touches_kernel else []
        if missing:
            raise FailedPrecondition(f"vhost namespaces missing: {', '.join(missing[:5])}")
        metrics = AgentMetrics.create(registry)
        alcor = (
            AlcorPorts(settings.alcor_url, netns_fd=management, metrics=metrics.control_plane)
            if settings.alcor_url
            else None
        )
        servicer = AgentServicer(
            vhosts,
            alcor=alcor,
            workers=settings.workers,
            max_pings=settings.max_pings_in_flight,
            control_plane=settings.control_plane(),
            host=host,
            planes=planes,
            metrics=metrics,
            management_netns=management,
            chassis_dir=settings.chassis_dir
            or (settings.vhosts_file.parent / "ovn" if settings.vhosts_file else None),
            goalstate_marker=settings.vhosts_file.with_suffix(".goalstates")
            if settings.vhosts_file
            else None,
        )
        teardown.add(servicer.close)
        goalstates = goalstate_registration(GoalStateProvisionerServicer(servicer.goalstates.pick))
        server = GrpcServer(settings.listen_address(), [registration(servicer), goalstates], registry)

        resumed = await servicer.goalstates.resume()
        if resumed:
            log.info("goalstate_resumed", vhosts=len(resumed))

        async def mark_vhosts_serving() -> None:
            listen = settings.listen_address()
            if settings.socket_group >= 0 and listen.startswith("unix:"):
                # Callers in that group (not running as root) may connect; nobody else.
                path = listen.removeprefix("unix://").removeprefix("unix:")
                os.chown(path, -1, settings.socket_group)
                os.chmod(path, 0o660)
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

        return BuiltService(
            name="agent",
            server=server,
            root=servicer,
            teardown=teardown,
            on_started=mark_vhosts_serving,
            metrics_server=metrics_server,
        )


async def run(settings: AgentSettings) -> None:
    """Serve the agent until SIGTERM."""
    await serve(await build(settings), settings)
