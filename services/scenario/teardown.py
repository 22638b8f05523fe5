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
# The share of a teardown's deadline kept for deleting the lab (and asking again what failed before it):
# whatever compute and the network do, the topology's DELETE is tried.
LAB_SHARE = 0.2


class TeardownIncomplete(MerakError):
    """A teardown that left part of a scenario: what, why and what to do, with the code of its first
    failure (a service's code passes as it is)."""

    def __init__(self, message: str, code: grpc.StatusCode) -> None:
        super().__init__(message)
        self.code = code


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
        """Delete a scenario; a deployed one only with `teardown`: compute, network, topology go first,
        within the settings' teardown_deadline."""
        if not scenario_id:
            raise InvalidArgument("id", "required")
        with self.tracker.exclusive(scenario_id, "DeleteScenario"):
            deadline = self.settings.teardown_deadline
            end = asyncio.get_running_loop().time() + deadline
            # The lab's own share of the deadline, which what comes before it never takes.
            lab_from = end - deadline * LAB_SHARE
            scenario = await self.tracker.scenario(scenario_id)
            try:
                async with asyncio.timeout_at(lab_from):
                    scenario = await self.tracker.refresh_moving(scenario, owner=True)
            except TimeoutError:
                log.warning("teardown_statuses_not_refreshed", scenario_id=scenario_id)
            deployed = list(reversed(states.deployed(scenario)))
            if deployed and not teardown:
                raise FailedPrecondition(
                    f"scenario {scenario_id!r} is deployed ({states.describe_statuses(scenario)}); DELETE "
                    f"{', '.join(s.label for s in deployed)} first, or delete it with teardown"
                )
            if deployed:
                scenario = await self._teardown_all(scenario, deployed, lab_from, end)

            def still_deployed(stored: scenario_pb2.Scenario) -> None:
                if states.deployed(stored):
                    raise FailedPrecondition(
                        f"scenario {scenario_id!r} is deployed ({states.describe_statuses(stored)})"
                    )

            await self.store.delete(SCENARIO, scenario_id, still_deployed)
            await self.fault_runs.forget(scenario_id)
        log.info("scenario_deleted", scenario_id=scenario_id, teardown=teardown)

    async def _teardown_all(
        self, scenario: scenario_pb2.Scenario, deployed: list[Service], lab_from: float, end: float
    ) -> scenario_pb2.Scenario:
        """DELETE each deployed service in turn (compute, network, topology), by loop time `end`.

        The lab's faults are healed first. Compute and the network have until `lab_from`; when one of
        them fails (an agent that cannot delete its VMs or does not answer, a service that is down, its
        share of the deadline spent), the lab is deleted all the same — its agents and namespaces
        removed by the topology service, the VMs with them — and what failed is asked again (compute
        then counts the VMs of the gone hosts as gone). What is still left is said in one short
        sentence (TeardownIncomplete)."""
        if TOPOLOGY in deployed and scenario.topology_id:
            try:
                async with asyncio.timeout_at(lab_from):
                    await self._clear_lab_faults(scenario)
            except TimeoutError:
                log.warning("teardown_faults_not_cleared", scenario_id=scenario.id, error="deadline")
        before_lab = [s for s in deployed if s is not TOPOLOGY]
        errors: dict[Service, MerakError] = {}
        for service in before_lab:
            scenario, error = await self._try(scenario, service, lab_from)
            if error is not None:
                errors[service] = error
                break
        if TOPOLOGY in deployed:
            scenario, error = await self._try(scenario, TOPOLOGY, end)
            if error is not None:
                errors[TOPOLOGY] = error
            elif errors:
                # Its hosts gone, what failed before may go now, and what was not tried after it.
                for service in before_lab[before_lab.index(next(iter(errors))) :]:
                    scenario, error = await self._try(scenario, service, end)
                    if error is not None:
                        errors[service] = error
                        break
                    errors.pop(service, None)
        left = [s for s in deployed if states.status_of(scenario, s) != scenario_pb2.NONE]
        if errors or left:
            raise self._incomplete(scenario, deployed, left, errors)
        return scenario

    async def _try(
        self, scenario: scenario_pb2.Scenario, service: Service, until: float
    ) -> tuple[scenario_pb2.Scenario, MerakError | None]:
        """DELETE `service`, given until loop time `until`; the scenario as it is after, and why it
        failed (None when it did not)."""
        try:
            async with asyncio.timeout_at(until):
                # Each teardown returns the scenario as it wrote it last, which no one else writes meanwhile.
                return await self.teardown(scenario, service), None
        except MerakError as exc:
            error = exc
        except TimeoutError:
            error = DeadlineExceeded(
                f"did not finish in time (MERAK_TEARDOWN_DEADLINE: {self.settings.teardown_deadline:g}s)"
            )
        log.warning(
            "teardown_step_failed",
            scenario_id=scenario.id,
            service=service.label,
            code=error.code.name,
            error=error.message[:300],
        )
        return await self.tracker.scenario(scenario.id), error

    def _incomplete(
        self,
        scenario: scenario_pb2.Scenario,
        deployed: list[Service],
        left: list[Service],
        errors: dict[Service, MerakError],
    ) -> TeardownIncomplete:
        """What a teardown left, why, and what to do: one short sentence, with the first failure's code
        (DEADLINE_EXCEEDED when a wait ran out)."""
        left = left or list(errors)
        reasons = {s: states.short(e.message, 200) for s, e in errors.items()}
        why = [f"{s.label} ({reasons.get(s, 'not tried')})" for s in left]
        gone = [s.label for s in deployed if s not in left]
        labels = ", ".join(s.label for s in left)
        message = (
            f"cannot delete scenario {scenario.id!r}: its teardown left {', '.join(why)}"
            + (f"; {' and '.join(gone)} deleted" if gone else "")
            + f". CHECK {labels}, DELETE {'it' if len(left) == 1 else 'them'} again, then delete the scenario"
        )
        codes = [e.code for e in errors.values()]
        code = codes[0] if codes else grpc.StatusCode.FAILED_PRECONDITION
        if grpc.StatusCode.DEADLINE_EXCEEDED in codes:
            code = grpc.StatusCode.DEADLINE_EXCEEDED
        return TeardownIncomplete(message, code)

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
                raise self._teardown_timeout() from None
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
        except TimeoutError:
            raise self._teardown_timeout() from None
        observation = await self.tracker.observe(scenario, COMPUTE)
        scenario = await self.tracker.set_status(scenario.id, COMPUTE, observation.status)
        if observation.status != scenario_pb2.NONE:
            progress = observation.compute.progress if observation.compute else compute_pb2.ComputeProgress()
            ended = states.status_name(observation.status)
            failure = states.compute_failure(progress)
            raise FailedPrecondition(f"compute's DELETE ended {ended}" + (f" ({failure})" if failure else ""))
        return scenario

    def _teardown_timeout(self) -> DeadlineExceeded:
        timeout = self.settings.teardown_timeout
        return DeadlineExceeded(
            f"compute did not delete its VMs within {timeout:g}s (MERAK_TEARDOWN_TIMEOUT)"
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
