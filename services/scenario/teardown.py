"""Deleting a scenario (with what it deployed: compute, network, topology), and at start forgetting the
labs that went away while the service was down."""

from __future__ import annotations

import asyncio

import grpc

from merak.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, MerakError, ServiceError
from merak.logs import get_logger
from merak.v1 import common_pb2, compute_pb2, scenario_pb2, topology_pb2
from services.scenario import states, translate
from services.scenario.actions import Configs, ScenarioActions
from services.scenario.config import ScenarioSettings
from services.scenario.faultrun import FaultRuns
from services.scenario.models import COMPUTE, SCENARIO, TOPOLOGY, Service
from services.scenario.tracker import StatusTracker

log = get_logger(__name__)

# How long a teardown waits for the lab's faults to be healed before it goes on regardless.
CLEAR_FAULTS_SECONDS = 60.0


class ScenarioTeardown:
    """DeleteScenario (a deployed one only with teardown) and the reconciliation at start."""

    def __init__(
        self,
        tracker: StatusTracker,
        actions: ScenarioActions,
        fault_runs: FaultRuns,
        settings: ScenarioSettings,
    ) -> None:
        self.tracker = tracker
        self.store = tracker.store
        self.actions = actions
        self.fault_runs = fault_runs
        self.clients = tracker.clients
        self.settings = settings

    async def delete_scenario(self, scenario_id: str, teardown: bool) -> None:
        """Delete a scenario; a deployed one only with `teardown`: compute, network, topology go first."""
        if not scenario_id:
            raise InvalidArgument("id", "required")
        with self.tracker.exclusive(scenario_id, "DeleteScenario"):
            scenario = await self.tracker.scenario(scenario_id)
            scenario = await self.tracker.refresh_moving(scenario, owner=True)
            deployed = list(reversed(states.deployed(scenario)))
            if deployed and not teardown:
                raise FailedPrecondition(
                    f"scenario {scenario_id!r} is deployed ({states.describe_statuses(scenario)}); DELETE "
                    f"{', '.join(s.label for s in deployed)} first, or delete it with teardown"
                )
            if (
                deployed
                and scenario.topology_id
                and states.status_of(scenario, TOPOLOGY) != scenario_pb2.NONE
            ):
                await self._clear_lab_faults(scenario)
            scenario = await self._teardown_all(scenario, deployed)

            def still_deployed(stored: scenario_pb2.Scenario) -> None:
                if states.deployed(stored):
                    raise FailedPrecondition(
                        f"scenario {scenario_id!r} is deployed ({states.describe_statuses(stored)})"
                    )

            await self.store.delete(SCENARIO, scenario_id, still_deployed)
            await self.fault_runs.forget(scenario_id)
        log.info("scenario_deleted", scenario_id=scenario_id, teardown=teardown)

    async def _teardown_all(
        self, scenario: scenario_pb2.Scenario, deployed: list[Service]
    ) -> scenario_pb2.Scenario:
        """DELETE each deployed service in turn (compute, network, topology). When compute's DELETE does
        not finish (an agent that cannot delete its VMs, or does not answer: compute gives up on it after
        its retries), the lab is deleted anyway — its agents and namespaces removed by the topology
        service, the VMs with them — and compute's DELETE is asked again, which then counts the VMs of
        the gone hosts as gone. What still fails is said in one short sentence."""
        remaining = list(deployed)
        retried = False
        while remaining:
            service = remaining.pop(0)
            try:
                # Each teardown returns the scenario as it wrote it last, which no one else writes meanwhile.
                scenario = await self.teardown(scenario, service)
            except (FailedPrecondition, DeadlineExceeded) as exc:
                if service is not COMPUTE or TOPOLOGY not in remaining or retried:
                    raise
                retried = True
                log.warning(
                    "teardown_compute_did_not_finish", scenario_id=scenario.id, error=exc.message[:300]
                )
                scenario = await self.tracker.scenario(scenario.id)
                try:
                    scenario = await self.teardown(scenario, TOPOLOGY)
                except MerakError as again:
                    raise FailedPrecondition(
                        f"cannot delete scenario {scenario.id!r}: compute's DELETE did not finish "
                        f"({exc.message[:200]}), and neither did its topology's "
                        f"({again.message[:200]}); CHECK both, then delete the scenario again"
                    ) from None
                remaining.remove(TOPOLOGY)
                remaining.insert(0, COMPUTE)  # its hosts gone, their VMs went with them
        return scenario

    async def _clear_lab_faults(self, scenario: scenario_pb2.Scenario) -> None:
        """A teardown starts from a healthy lab: the fault schedule stops and every fault the lab holds
        (scheduled, or set on the lab by hand) is healed — a crashed host's agent started again, a frozen
        one thawed — so that every agent can remove its VMs. Bounded (CLEAR_FAULTS_SECONDS): a lab that
        cannot be healed is torn down all the same, its topology's DELETE removing what is left."""
        await self.fault_runs.stop(scenario.id, heal=False)
        request = topology_pb2.ClearFaultsRequest(topology_id=scenario.topology_id)
        try:
            async with asyncio.timeout(CLEAR_FAULTS_SECONDS):
                await self.clients.topology_faults("ClearFaults", request)
        except ServiceError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                log.warning("teardown_faults_not_cleared", scenario_id=scenario.id, error=exc.message[:300])
        except TimeoutError:
            log.warning(
                "teardown_faults_not_cleared", scenario_id=scenario.id, error=f"{CLEAR_FAULTS_SECONDS}s"
            )

    async def teardown(self, scenario: scenario_pb2.Scenario, service: Service) -> scenario_pb2.Scenario:
        """DELETE one service of a scenario this process owns; compute's VMs must be gone when it returns."""
        configs = await Configs.of(self.store, scenario)
        reply = await self.actions.metered(
            service, scenario_pb2.DELETE, self.actions.apply(scenario, configs, service, scenario_pb2.DELETE)
        )
        scenario = reply.scenario
        if service is COMPUTE and states.status_of(scenario, COMPUTE) == scenario_pb2.DELETING:
            scenario = await self._wait_compute_deleted(scenario)
        return scenario

    async def _wait_compute_deleted(self, scenario: scenario_pb2.Scenario) -> scenario_pb2.Scenario:
        """Follow compute's progress until its DELETE is over; the VMs must be gone."""
        timeout = self.settings.teardown_timeout
        try:
            async with asyncio.timeout(timeout):
                async for _progress in self.clients.compute_progress(scenario.compute_config_id, timeout):
                    pass
        except ServiceError as exc:
            if exc.callee_code == grpc.StatusCode.DEADLINE_EXCEEDED:  # the watch's own deadline
                raise self._teardown_timeout(scenario) from None
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
        except TimeoutError:
            raise self._teardown_timeout(scenario) from None
        observation = await self.tracker.observe(scenario, COMPUTE)
        scenario = await self.tracker.set_status(scenario.id, COMPUTE, observation.status)
        if observation.status != scenario_pb2.NONE:
            progress = observation.compute.progress if observation.compute else compute_pb2.ComputeProgress()
            ended = states.status_name(observation.status)
            raise FailedPrecondition(
                f"cannot delete scenario {scenario.id!r}: compute's DELETE ended {ended} "
                f"({states.compute_failure(progress)}); CHECK compute, DELETE it again, then delete the "
                "scenario"
            )
        return scenario

    def _teardown_timeout(self, scenario: scenario_pb2.Scenario) -> DeadlineExceeded:
        timeout = self.settings.teardown_timeout
        return DeadlineExceeded(
            f"compute did not delete the VMs of scenario {scenario.id!r} within {timeout:g}s; "
            "CHECK compute, then delete the scenario again"
        )

    async def reconcile(self) -> list[str]:
        """At start: a scenario whose topology no longer exists (deleted behind its back: `merak down`,
        a machine that restarted) stops saying it is deployed. Its compute config is deleted (its VMs
        went with the lab; compute frees their addresses) and topology and compute say NONE. Returns
        the ids of the scenarios it changed."""
        changed: list[str] = []
        await self.fault_runs.heal_abandoned()
        after = ""
        while True:
            scenarios, after = await self.store.page(SCENARIO, after, 200)
            for scenario in scenarios:
                if states.status_of(scenario, TOPOLOGY) == scenario_pb2.NONE or self.tracker.busy(
                    scenario.id
                ):
                    continue
                if await self._topology_exists(scenario):
                    continue
                with self.tracker.exclusive(scenario.id, "reconcile"):
                    await self._forget_lab(scenario)
                changed.append(scenario.id)
            if not after:
                return changed

    async def _topology_exists(self, scenario: scenario_pb2.Scenario) -> bool:
        """Asks the topology service (its client waits out UNAVAILABLE: it may be starting with us)."""
        try:
            await self.clients.topology(translate.topology_ref(scenario.topology_id, common_pb2.INFO))
        except ServiceError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND:
                return False
            log.warning("scenario_reconcile_skipped", scenario_id=scenario.id, error=exc.message)
            # cannot tell: leave it as it is
        return True

    async def _forget_lab(self, scenario: scenario_pb2.Scenario) -> None:
        was = states.describe_statuses(scenario)
        await self.fault_runs.stop(scenario.id, heal=False)
        if states.status_of(scenario, COMPUTE) != scenario_pb2.NONE:
            try:
                scenario = await self.teardown(scenario, COMPUTE)
            except MerakError as exc:
                log.warning("scenario_reconcile_compute_failed", scenario_id=scenario.id, error=exc.message)
                await self.tracker.set_status(scenario.id, COMPUTE, scenario_pb2.FAILED)
        scenario = await self.tracker.set_status(scenario.id, TOPOLOGY, scenario_pb2.NONE)
        log.warning(
            "scenario_reconciled",
            scenario_id=scenario.id,
            topology_id=scenario.topology_id,
            was=was,
            now=states.describe_statuses(scenario),
            reason="its topology no longer exists",
        )
