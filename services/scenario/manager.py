"""The scenario service's work behind its APIs (gRPC and REST), one entry point composed of its parts:
actions (DEPLOY / CHECK / DELETE / UPDATE per service), views (GET, WatchScenario, results, the
connectivity test), teardown (DeleteScenario, reconciliation at start) and the fault schedules."""

from __future__ import annotations

from collections.abc import AsyncIterator

from merak.errors import InvalidArgument
from merak.v1 import compute_pb2, scenario_pb2
from services.scenario.actions import ScenarioActions, service_and_action
from services.scenario.clients import ServiceClients
from services.scenario.config import ScenarioSettings
from services.scenario.faultrun import FaultRuns
from services.scenario.metrics import ScenarioMetrics
from services.scenario.models import Action, ServiceName
from services.scenario.store import ScenarioStore
from services.scenario.teardown import ScenarioTeardown
from services.scenario.tracker import StatusTracker
from services.scenario.views import ScenarioViews


class ScenarioManager:
    """Runs actions against topology, network and compute, keeping each service's status on the scenario.

    Actions that change something (DEPLOY, DELETE, UPDATE, DeleteScenario) run one at a time per
    scenario in this process; another one meanwhile is FAILED_PRECONDITION. CHECK and WatchScenario
    never wait: they write a status only if it is still the one they started from.
    """

    def __init__(
        self,
        store: ScenarioStore,
        clients: ServiceClients,
        settings: ScenarioSettings,
        metrics: ScenarioMetrics,
    ) -> None:
        self.store = store
        self.clients = clients
        self.settings = settings
        self.metrics = metrics
        tracker = StatusTracker(store, clients)
        self.fault_runs = FaultRuns(store, clients)
        self.actions = ScenarioActions(tracker, self.fault_runs, clients, metrics)
        self.views = ScenarioViews(tracker, self.fault_runs, settings, metrics)
        self.teardown = ScenarioTeardown(tracker, self.actions, self.fault_runs, settings)

    async def action(
        self, scenario_id: str, service_name: ServiceName, action: Action
    ) -> scenario_pb2.ScenarioActionReply:
        """Run one action of one service of a scenario."""
        if not scenario_id:
            raise InvalidArgument("scenario_id", "required")
        service = service_and_action(service_name, action)
        return await self.actions.action(scenario_id, service, action)

    async def delete_scenario(self, scenario_id: str, teardown: bool) -> None:
        """Delete a scenario; a deployed one only with `teardown`: compute, network, topology go first."""
        await self.teardown.delete_scenario(scenario_id, teardown)

    async def current(self, scenario: scenario_pb2.Scenario) -> scenario_pb2.Scenario:
        """A stored scenario with the statuses that may have moved on read again from the services."""
        return await self.views.current(scenario)

    def watch(self, scenario_id: str) -> AsyncIterator[scenario_pb2.ScenarioProgress]:
        """The scenario's progress on every change, until no service is in a transition."""
        return self.views.watch(scenario_id)

    async def results(self, scenario_id: str) -> compute_pb2.ComputeResults:
        """The compute service's results for the scenario's compute config, with its fault windows."""
        return await self.views.results(scenario_id)

    async def run_test(self, request: scenario_pb2.RunTestRequest) -> scenario_pb2.TestReport:
        """The connectivity test; compute must be READY."""
        return await self.views.run_test(request)

    async def stop_faults(self, scenario_id: str, *, heal: bool) -> None:
        """End the scenario's fault schedule; with `heal`, the lab keeps only its own faults."""
        await self.fault_runs.stop(scenario_id, heal=heal)

    async def heal_abandoned(self) -> list[str]:
        """At start: schedules recorded as running but run by no one end, their labs healed."""
        return await self.fault_runs.heal_abandoned()

    async def reconcile(self) -> list[str]:
        """At start: scenarios whose topology no longer exists stop saying they are deployed."""
        return await self.teardown.reconcile()

    async def close(self) -> None:
        """On shutdown: every running schedule stops and its lab heals (a restart would heal it too)."""
        await self.fault_runs.close()
