"""Each service's status as the scenario stores it: written by the action that owns the scenario, or read
again from the service (INFO) when none does. Which status follows is decided in states.py."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from merak.errors import FailedPrecondition, NotFound, ServiceError
from merak.logs import get_logger
from merak.v1 import common_pb2, compute_pb2, network_pb2, scenario_pb2, topology_pb2
from services.scenario import states, translate
from services.scenario.clients import ServiceClients
from services.scenario.models import NETWORK, SCENARIO, SERVICES, TOPOLOGY, Action, Service, Status
from services.scenario.store import ScenarioStore

log = get_logger(__name__)


@dataclass
class Observation:
    """What a service says about its part of a scenario, and the status that follows."""

    status: Status
    counts: scenario_pb2.StatusCounts | None = None
    topology: topology_pb2.ReturnTopologyMessage | None = None
    network: network_pb2.ReturnNetworkMessage | None = None
    compute: compute_pb2.ReturnComputeMessage | None = None


class StatusTracker:
    """Reads and writes the services' statuses of scenarios; knows which scenario an action owns.

    Actions that change something run one at a time per scenario in this process (`exclusive`); while
    one runs, it alone writes the scenario's statuses and everyone else only reads them.
    """

    def __init__(self, store: ScenarioStore, clients: ServiceClients) -> None:
        self.store = store
        self.clients = clients
        self._owners: dict[str, str] = {}

    async def scenario(self, scenario_id: str) -> scenario_pb2.Scenario:
        """The stored scenario; NotFound when missing."""
        scenario = await self.store.get(SCENARIO, scenario_id)
        if scenario is None:
            raise NotFound(f"scenario {scenario_id!r} does not exist")
        return scenario

    def busy(self, scenario_id: str) -> bool:
        """Whether an action of this process owns the scenario."""
        return scenario_id in self._owners

    @contextmanager
    def exclusive(self, scenario_id: str, what: str) -> Iterator[None]:
        """Own the scenario while `what` runs; FailedPrecondition when another action owns it."""
        running = self._owners.get(scenario_id)
        if running is not None:
            raise FailedPrecondition(
                f"scenario {scenario_id!r} is busy: {running} is running; try again when it returns"
            )
        self._owners[scenario_id] = what
        try:
            yield
        finally:
            del self._owners[scenario_id]

    async def set_status(
        self, scenario_id: str, service: Service, status: Status, warnings: Sequence[str] | None = None
    ) -> scenario_pb2.Scenario:
        """Set a service's status; with `warnings`, they replace what that service left out before."""

        def change(scenario: scenario_pb2.Scenario) -> scenario_pb2.Scenario:
            changed = states.with_status(scenario, service, status)
            if warnings is not None:
                states.with_warnings(changed, service, warnings)
            return changed

        return await self.store.modify(SCENARIO, scenario_id, change)

    async def refresh_status(
        self, scenario_id: str, service: Service, seen: Status, status: Status
    ) -> scenario_pb2.Scenario:
        """Set a status read from the service, unless an action changed it since it was read."""
        return await self.store.modify(
            SCENARIO, scenario_id, lambda scenario: states.refreshed(scenario, service, seen, status)
        )

    async def observe(self, scenario: scenario_pb2.Scenario, service: Service) -> Observation:
        """Ask the service (INFO) where the scenario's part stands; a part deleted as asked is NONE."""
        try:
            if service is TOPOLOGY:
                topology = await self.clients.topology(
                    translate.topology_ref(scenario.topology_id, common_pb2.INFO)
                )
                nodes = topology.compute_nodes
                return Observation(
                    states.topology_status(nodes),
                    translate.counts(n.status for n in nodes),
                    topology=topology,
                )
            if service is NETWORK:
                network = await self.clients.network(
                    translate.network_ref(scenario.network_config_id, common_pb2.INFO)
                )
                return Observation(states.network_status(), network=network)
            compute = await self.clients.compute(
                translate.compute_ref(scenario.compute_config_id, scenario.id, common_pb2.INFO)
            )
            progress = compute.progress
            return Observation(
                states.compute_status(progress), translate.progress_counts(progress), compute=compute
            )
        except ServiceError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND and states.gone_is_none(
                states.status_of(scenario, service)
            ):
                return Observation(scenario_pb2.NONE, scenario_pb2.StatusCounts())
            raise

    async def refresh(
        self, scenario: scenario_pb2.Scenario, service: Service
    ) -> tuple[scenario_pb2.Scenario, Observation]:
        """Ask the service where its part stands and keep that on the scenario, unless an action owns it."""
        seen = states.status_of(scenario, service)
        observation = await self.observe(scenario, service)
        if self.busy(scenario.id):
            return scenario, observation  # the running action owns the statuses
        return await self.refresh_status(scenario.id, service, seen, observation.status), observation

    async def refresh_moving(self, scenario: scenario_pb2.Scenario, *, owner: bool) -> scenario_pb2.Scenario:
        """Statuses that may have moved on (DEPLOYING, DELETING) are read again before they are checked.

        Only the action that owns the scenario (`owner`), or anyone while no action runs, writes them.
        """
        if not owner and self.busy(scenario.id):
            return scenario
        for service in SERVICES:
            # The scenario each refresh returns is the one looked at next.
            seen = states.status_of(scenario, service)
            if seen not in states.TRANSITIONAL:
                continue
            try:
                observation = await self.observe(scenario, service)
            except ServiceError as exc:
                log.info(
                    "scenario_refresh_failed",
                    scenario_id=scenario.id,
                    service=service.label,
                    error=exc.message,
                )
                continue
            scenario = await self.refresh_status(scenario.id, service, seen, observation.status)
        return scenario

    async def ready_nodes(
        self, scenario: scenario_pb2.Scenario, action: Action, service: Service
    ) -> list[common_pb2.InternalComputeInfo]:
        """The topology's vhosts, which must all be READY (Merak ran a topology CHECK here too)."""
        seen = states.status_of(scenario, TOPOLOGY)
        reply = await self.clients.topology(translate.topology_ref(scenario.topology_id, common_pb2.INFO))
        status = states.topology_status(reply.compute_nodes)
        if status != scenario_pb2.READY:
            await self.refresh_status(scenario.id, TOPOLOGY, seen, status)
            raise states.topology_not_ready(action, service, status, reply.compute_nodes)
        return list(reply.compute_nodes)
