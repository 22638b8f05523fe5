"""Scenario actions: DEPLOY / CHECK / DELETE / UPDATE per service in Merak's order; teardown; progress."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format

from merak.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, MerakError, NotFound
from merak.grpcclient import ServiceError
from merak.ids import check_ping_waits
from merak.logs import get_logger
from merak.skips import Skips
from merak.v1 import common_pb2, compute_pb2, network_pb2, scenario_pb2, topology_pb2
from services.scenario import faults, states, translate, validate
from services.scenario.clients import ServiceClients
from services.scenario.config import ScenarioSettings
from services.scenario.faultrun import FaultRun, FaultRunRecord, ask_lab
from services.scenario.metrics import ScenarioMetrics
from services.scenario.models import (
    COMPUTE,
    COMPUTE_CONFIG,
    NETWORK,
    NETWORK_CONFIG,
    SCENARIO,
    SERVICE_BY_NAME,
    SERVICE_CONFIG,
    SERVICES,
    TEST_CONFIG,
    TOPOLOGY,
    TOPOLOGY_CONFIG,
    TRANSITIONAL,
    Action,
    Kind,
    M,
    Service,
    ServiceName,
    Status,
    action_name,
    describe_statuses,
    status_name,
    status_of,
    with_status,
)
from services.scenario.pingall import ConnectivityTest, PingOptions
from services.scenario.store import ScenarioStore

log = get_logger(__name__)

_ACTIONS = (scenario_pb2.DEPLOY, scenario_pb2.CHECK, scenario_pb2.DELETE, scenario_pb2.UPDATE)
# An UPDATE the service turned down leaves the service as it was.
_REJECTED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
)


@dataclass
class Observation:
    """What a service says about its part of a scenario, and the status that follows."""

    status: Status
    counts: scenario_pb2.StatusCounts | None = None
    topology: topology_pb2.ReturnTopologyMessage | None = None
    network: network_pb2.ReturnNetworkMessage | None = None
    compute: compute_pb2.ReturnComputeMessage | None = None


@dataclass
class Configs:
    """The configs a scenario refers to."""

    topology: scenario_pb2.TopologyConfig
    network: scenario_pb2.NetworkConfig
    compute: scenario_pb2.ComputeConfig
    service: scenario_pb2.ServiceConfig | None
    test: scenario_pb2.TestConfig | None


def _check_config(service: Service, config: Any) -> list[str]:
    """The config about to be deployed must be valid (REST stores Merak's bodies unchecked, as Merak did).

    Checked leniently (merak.skips): what Merak ignored is not an error. Topology and network leave those
    entries out themselves and say so in their replies; what only this service sees (compute's ports per
    VM) is returned here as warnings.
    """
    skips = Skips()
    try:
        validate.validate(service.config_kind, config, skips)
    except InvalidArgument as exc:
        raise InvalidArgument(f"{service.config_kind.label} {config.id}: {exc.field}", exc.problem) from None
    return skips.warnings if service is COMPUTE else []


def _with_warnings(scenario: scenario_pb2.Scenario, service: Service, warnings: list[str]) -> None:
    """The scenario's warnings with `service`'s replaced by `warnings` (each kept as "<service>: …")."""
    prefix = f"{service.label}: "
    kept = [w for w in scenario.warnings if not w.startswith(prefix)]
    del scenario.warnings[:]
    scenario.warnings.extend([*kept, *(prefix + w for w in warnings)])


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, MerakError):
        return exc.code.name.lower()
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal"


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
        self._busy: dict[str, str] = {}
        # Fault schedules running in this process, by scenario.
        self._fault_runs: dict[str, FaultRun] = {}

    # --- bookkeeping -------------------------------------------------------------------------

    async def _scenario(self, scenario_id: str) -> scenario_pb2.Scenario:
        scenario = await self.store.get(SCENARIO, scenario_id)
        if scenario is None:
            raise NotFound(f"scenario {scenario_id!r} does not exist")
        return scenario

    @contextmanager
    def _exclusive(self, scenario_id: str, what: str) -> Iterator[None]:
        running = self._busy.get(scenario_id)
        if running is not None:
            raise FailedPrecondition(
                f"scenario {scenario_id!r} is busy: {running} is running; try again when it returns"
            )
        self._busy[scenario_id] = what
        try:
            yield
        finally:
            del self._busy[scenario_id]

    async def _set_status(
        self, scenario_id: str, service: Service, status: Status, warnings: list[str] | None = None
    ) -> scenario_pb2.Scenario:
        """Set a service's status; with `warnings`, they replace what that service left out before."""

        def change(scenario: scenario_pb2.Scenario) -> scenario_pb2.Scenario:
            changed = with_status(scenario, service, status)
            if warnings is not None:
                _with_warnings(changed, service, warnings)
            return changed

        return await self.store.modify(SCENARIO, scenario_id, change)

    async def _refresh_status(
        self, scenario_id: str, service: Service, seen: Status, status: Status
    ) -> scenario_pb2.Scenario:
        """Set a status read from the service, unless an action changed it since it was read."""

        def change(scenario: scenario_pb2.Scenario) -> scenario_pb2.Scenario:
            if status_of(scenario, service) != seen:
                return scenario
            return with_status(scenario, service, status)

        return await self.store.modify(SCENARIO, scenario_id, change)

    async def _config(self, kind: Kind[M], scenario: scenario_pb2.Scenario, field: str) -> M:
        config_id = getattr(scenario, field)
        config = await self.store.get(kind, config_id)
        if config is None:
            # References are kept in step with the configs; this is a store edited by hand.
            raise FailedPrecondition(
                f"{field}: {kind.label} {config_id!r} of scenario {scenario.id!r} is gone"
            )
        return config

    async def _configs(self, scenario: scenario_pb2.Scenario) -> Configs:
        return Configs(
            await self._config(TOPOLOGY_CONFIG, scenario, "topology_id"),
            await self._config(NETWORK_CONFIG, scenario, "network_config_id"),
            await self._config(COMPUTE_CONFIG, scenario, "compute_config_id"),
            await self.store.get(SERVICE_CONFIG, scenario.service_config_id),
            await self.store.get(TEST_CONFIG, scenario.test_config_id),
        )

    async def _metered(
        self, service: Service, action: Action, work: Awaitable[scenario_pb2.ScenarioActionReply]
    ) -> scenario_pb2.ScenarioActionReply:
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            return await work
        except BaseException as exc:
            failure = exc
            raise
        finally:
            name = action_name(action)
            self.metrics.actions.labels(service.label, name, _outcome(failure)).inc()
            self.metrics.action_seconds.labels(service.label, name).observe(time.perf_counter() - started)

    # --- what the services say ---------------------------------------------------------------

    async def _observe(self, scenario: scenario_pb2.Scenario, service: Service) -> Observation:
        """Ask the service (INFO) where the scenario's part stands; a part deleted as asked is NONE."""
        current = status_of(scenario, service)
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
                return Observation(scenario_pb2.READY, network=network)
            compute = await self.clients.compute(
                translate.compute_ref(scenario.compute_config_id, scenario.id, common_pb2.INFO)
            )
            progress = compute.progress
            return Observation(
                states.compute_status(progress), translate.progress_counts(progress), compute=compute
            )
        except ServiceError as exc:
            if exc.code == grpc.StatusCode.NOT_FOUND and current in (
                scenario_pb2.DELETING,
                scenario_pb2.NONE,
            ):
                return Observation(scenario_pb2.NONE, scenario_pb2.StatusCounts())
            raise

    async def _refresh(
        self, scenario: scenario_pb2.Scenario, service: Service
    ) -> tuple[scenario_pb2.Scenario, Observation]:
        seen = status_of(scenario, service)
        observation = await self._observe(scenario, service)
        if scenario.id in self._busy:
            return scenario, observation  # the running action owns the statuses
        return await self._refresh_status(scenario.id, service, seen, observation.status), observation

    async def _refresh_transitional(
        self, scenario: scenario_pb2.Scenario, *, owner: bool
    ) -> scenario_pb2.Scenario:
        """Statuses that may have moved on (DEPLOYING, DELETING) are read again before they are checked.

        Only the action that owns the scenario (`owner`), or anyone while no action runs, writes them.
        """
        if not owner and scenario.id in self._busy:
            return scenario
        for service in SERVICES:
            if status_of(scenario, service) not in TRANSITIONAL:
                continue
            seen = status_of(scenario, service)
            try:
                observation = await self._observe(scenario, service)
            except ServiceError as exc:
                log.info(
                    "scenario_refresh_failed",
                    scenario_id=scenario.id,
                    service=service.label,
                    error=exc.message,
                )
                continue
            scenario = await self._refresh_status(scenario.id, service, seen, observation.status)
        return scenario

    async def _ready_nodes(
        self, scenario: scenario_pb2.Scenario, action: Action, service: Service
    ) -> list[common_pb2.InternalComputeInfo]:
        """The topology's vhosts, which must all be READY (Merak ran a topology CHECK here too)."""
        seen = status_of(scenario, TOPOLOGY)
        reply = await self.clients.topology(translate.topology_ref(scenario.topology_id, common_pb2.INFO))
        status = states.topology_status(reply.compute_nodes)
        if status != scenario_pb2.READY:
            await self._refresh_status(scenario.id, TOPOLOGY, seen, status)
            ready = sum(1 for n in reply.compute_nodes if n.status == common_pb2.READY)
            raise FailedPrecondition(
                f"cannot {action_name(action)} {service.label}: topology is {status_name(status)} "
                f"({ready} of {len(reply.compute_nodes)} vhosts READY); wait until CHECK topology says READY"
            )
        return list(reply.compute_nodes)

    async def current(self, scenario: scenario_pb2.Scenario) -> scenario_pb2.Scenario:
        """A stored scenario with the statuses that may have moved on (DEPLOYING, DELETING) read again from
        the services: a client polling GET until compute says NONE sees it happen (unless an action runs)."""
        return await self._refresh_transitional(scenario, owner=False)

    # --- actions -----------------------------------------------------------------------------

    async def action(
        self, scenario_id: str, service_name: ServiceName, action: Action
    ) -> scenario_pb2.ScenarioActionReply:
        """Run one action of one service of a scenario."""
        if not scenario_id:
            raise InvalidArgument("scenario_id", "required")
        service = SERVICE_BY_NAME.get(int(service_name))
        if service is None:
            known = ", ".join(s.label.upper() for s in SERVICES)
            problem = (
                "required" if service_name == scenario_pb2.SERVICE_NAME_UNSPECIFIED else "unknown service"
            )
            raise InvalidArgument("service.service_name", f"{problem} ({int(service_name)}); known: {known}")
        if action not in _ACTIONS:
            known = ", ".join(action_name(a) for a in _ACTIONS)
            problem = "required" if action == scenario_pb2.ACTION_UNSPECIFIED else "unknown action"
            raise InvalidArgument("service.action", f"{problem} ({int(action)}); known: {known}")
        return await self._metered(service, action, self._action(scenario_id, service, action))

    async def _action(
        self, scenario_id: str, service: Service, action: Action
    ) -> scenario_pb2.ScenarioActionReply:
        scenario = await self._scenario(scenario_id)
        if action == scenario_pb2.CHECK:
            return await self._check(scenario, service)
        with self._exclusive(scenario_id, f"{action_name(action)} {service.label}"):
            scenario = await self._refresh_transitional(await self._scenario(scenario_id), owner=True)
            if action == scenario_pb2.DELETE and status_of(scenario, service) == scenario_pb2.NONE:
                return self._nothing_to_delete(scenario, service)
            states.check_action(scenario, service, action)
            configs = await self._configs(scenario)
            warnings: list[str] = []
            if action in (scenario_pb2.DEPLOY, scenario_pb2.UPDATE):
                warnings = _check_config(service, getattr(configs, service.label))
            if action == scenario_pb2.DEPLOY:
                await self._check_not_deployed_elsewhere(scenario, service)
            reply = await self._run(scenario, configs, service, action, warnings)
            if reply.warnings:
                log.warning(
                    "scenario_action_skipped",
                    scenario_id=scenario_id,
                    service=service.label,
                    action=action_name(action),
                    warnings=list(reply.warnings),
                )
            return reply

    def _nothing_to_delete(
        self, scenario: scenario_pb2.Scenario, service: Service
    ) -> scenario_pb2.ScenarioActionReply:
        """DELETE of what is not deployed: a success that says so (a client cleaning up after a failed
        step deletes compute, network and topology in turn, whatever got deployed)."""
        reply = self._reply(scenario_pb2.DELETE, service, scenario, Observation(scenario_pb2.NONE))
        reply.return_message += f"; {service.label} was not deployed (NONE): nothing to delete"
        return reply

    async def _run(
        self,
        scenario: scenario_pb2.Scenario,
        configs: Configs,
        service: Service,
        action: Action,
        warnings: Sequence[str] = (),
    ) -> scenario_pb2.ScenarioActionReply:
        if service is TOPOLOGY:
            return await self._topology(scenario, configs, action)
        if service is NETWORK:
            return await self._network(scenario, configs, action)
        return await self._compute(scenario, configs, action, warnings)

    async def _check(
        self, scenario: scenario_pb2.Scenario, service: Service
    ) -> scenario_pb2.ScenarioActionReply:
        """CHECK: refresh the service's status from its INFO reply; the scenario is not moved to DEPLOYING."""
        states.check_action(scenario, service, scenario_pb2.CHECK)
        seen = status_of(scenario, service)
        try:
            scenario, observation = await self._refresh(scenario, service)
        except ServiceError:
            if scenario.id not in self._busy:
                await self._refresh_status(scenario.id, service, seen, scenario_pb2.FAILED)
            raise
        return self._reply(scenario_pb2.CHECK, service, scenario, observation)

    async def _check_not_deployed_elsewhere(self, scenario: scenario_pb2.Scenario, service: Service) -> None:
        """A config's id names what runs (topology, netconfig, compute config id): one scenario at a time."""
        config_id = getattr(scenario, service.config_field)
        for other_id in await self.store.scenarios_using(service.config_kind, config_id):
            if other_id == scenario.id:
                continue
            other = await self.store.get(SCENARIO, other_id)
            if other is not None and status_of(other, service) != scenario_pb2.NONE:
                raise FailedPrecondition(
                    f"cannot DEPLOY {service.label}: {service.config_kind.label} {config_id!r} is deployed "
                    f"by scenario {other_id!r} ({service.label} {status_name(status_of(other, service))}); "
                    "DELETE it there first"
                )

    async def _call_failed(
        self, scenario_id: str, service: Service, action: Action, previous: Status, exc: ServiceError
    ) -> None:
        status = previous if action == scenario_pb2.UPDATE and exc.code in _REJECTED else scenario_pb2.FAILED
        await self._set_status(scenario_id, service, status)
        log.info(
            "scenario_action_failed",
            scenario_id=scenario_id,
            service=service.label,
            action=action_name(action),
            code=exc.code.name,
            error=exc.message,
        )

    async def _topology(
        self, scenario: scenario_pb2.Scenario, configs: Configs, action: Action
    ) -> scenario_pb2.ScenarioActionReply:
        previous = status_of(scenario, TOPOLOGY)
        if action == scenario_pb2.DELETE:
            await self.stop_faults(scenario.id, heal=False)  # the lab goes, its faults with it
            request = translate.topology_ref(scenario.topology_id, common_pb2.DELETE)
            transition: Status = scenario_pb2.DELETING
        else:
            operation = common_pb2.CREATE if action == scenario_pb2.DEPLOY else common_pb2.UPDATE
            request = translate.topology(configs.topology, configs.service, operation)
            transition = scenario_pb2.DEPLOYING if action == scenario_pb2.DEPLOY else scenario_pb2.UPDATING
        await self._set_status(scenario.id, TOPOLOGY, transition)
        try:
            reply = await self.clients.topology(request)
        except ServiceError as exc:
            if action == scenario_pb2.DELETE and exc.code == grpc.StatusCode.NOT_FOUND:
                reply = topology_pb2.ReturnTopologyMessage(
                    return_code=common_pb2.OK,
                    return_message=f"topology {scenario.topology_id!r} was gone already",
                )
            else:
                await self._call_failed(scenario.id, TOPOLOGY, action, previous, exc)
                raise
        nodes = reply.compute_nodes
        status = scenario_pb2.NONE if action == scenario_pb2.DELETE else states.topology_status(nodes)
        observation = Observation(status, translate.counts(n.status for n in nodes), topology=reply)
        scenario = await self._set_status(scenario.id, TOPOLOGY, status, list(reply.warnings))
        return self._reply(action, TOPOLOGY, scenario, observation, reply.warnings)

    async def _network(
        self, scenario: scenario_pb2.Scenario, configs: Configs, action: Action
    ) -> scenario_pb2.ScenarioActionReply:
        previous = status_of(scenario, NETWORK)
        if action == scenario_pb2.DELETE:
            request = translate.network_ref(scenario.network_config_id, common_pb2.DELETE)
            transition: Status = scenario_pb2.DELETING
        else:
            nodes = await self._ready_nodes(scenario, action, NETWORK)
            operation = common_pb2.CREATE if action == scenario_pb2.DEPLOY else common_pb2.UPDATE
            request = translate.network(configs.network, configs.service, nodes, operation)
            transition = scenario_pb2.DEPLOYING if action == scenario_pb2.DEPLOY else scenario_pb2.UPDATING
        await self._set_status(scenario.id, NETWORK, transition)
        try:
            reply = await self.clients.network(request)
        except ServiceError as exc:
            if action == scenario_pb2.DELETE and exc.code == grpc.StatusCode.NOT_FOUND:
                reply = network_pb2.ReturnNetworkMessage(
                    return_code=common_pb2.OK,
                    return_message=f"network config {scenario.network_config_id!r} was gone already",
                )
            else:
                await self._call_failed(scenario.id, NETWORK, action, previous, exc)
                raise
        status = scenario_pb2.NONE if action == scenario_pb2.DELETE else scenario_pb2.READY
        scenario = await self._set_status(scenario.id, NETWORK, status, list(reply.warnings))
        return self._reply(action, NETWORK, scenario, Observation(status, network=reply), reply.warnings)

    async def _compute(
        self, scenario: scenario_pb2.Scenario, configs: Configs, action: Action, warnings: Sequence[str]
    ) -> scenario_pb2.ScenarioActionReply:
        previous = status_of(scenario, COMPUTE)
        skips = Skips()
        if action in (scenario_pb2.DEPLOY, scenario_pb2.UPDATE):
            nodes = await self._ready_nodes(scenario, action, COMPUTE)
            network = await self.clients.network(
                translate.network_ref(scenario.network_config_id, common_pb2.INFO)
            )
            request = translate.compute(
                configs.compute,
                service_config=configs.service,
                scenario_id=scenario.id,
                network_config=configs.network,
                nodes=nodes,
                deployed_network=network,
                skips=skips,
            )
            transition: Status = scenario_pb2.DEPLOYING
            if action == scenario_pb2.UPDATE:
                # The same request with the config as it is now: compute deletes and creates the difference.
                request.operation_type = common_pb2.UPDATE
                transition = scenario_pb2.UPDATING
            else:
                await self._check_schedule(scenario, configs.test)
        elif action == scenario_pb2.DELETE:
            # The lab heals before its VMs go: a crashed host's agent must be back to delete them.
            await self.stop_faults(scenario.id, heal=True)
            request = translate.compute_ref(scenario.compute_config_id, scenario.id, common_pb2.DELETE)
            transition = scenario_pb2.DELETING
        await self._set_status(scenario.id, COMPUTE, transition)
        asked = time.time()
        try:
            reply = await self.clients.compute(request)
        except ServiceError as exc:
            if action == scenario_pb2.DELETE and exc.code == grpc.StatusCode.NOT_FOUND:
                reply = compute_pb2.ReturnComputeMessage(
                    return_code=common_pb2.OK,
                    return_message=f"compute config {scenario.compute_config_id!r} was gone already",
                )
            else:
                await self._call_failed(scenario.id, COMPUTE, action, previous, exc)
                raise
        if reply.HasField("progress"):
            status = states.compute_status(reply.progress)
            counts = translate.progress_counts(reply.progress)
        else:
            # Compute answers DELETE of a config it does not have without progress: nothing is left.
            status = scenario_pb2.NONE if action == scenario_pb2.DELETE else transition
            counts = scenario_pb2.StatusCounts()
        warnings = [*warnings, *skips.warnings, *reply.warnings]
        scenario = await self._set_status(scenario.id, COMPUTE, status, warnings)
        started = status in (scenario_pb2.DEPLOYING, scenario_pb2.READY)
        if action == scenario_pb2.DEPLOY and started and configs.test and configs.test.fault_schedule:
            await self._start_faults(scenario, configs.test, asked)
        return self._reply(action, COMPUTE, scenario, Observation(status, counts, compute=reply), warnings)

    # --- fault schedules ---------------------------------------------------------------------

    async def _check_schedule(
        self, scenario: scenario_pb2.Scenario, test: scenario_pb2.TestConfig | None
    ) -> None:
        """The test config's fault schedule must be valid and each fault possible in this lab (asked of
        the topology service, which changes nothing), before compute creates a VM."""
        if test is None or not test.fault_schedule:
            return
        prefix = f"test config {test.id}: fault_schedule"
        faults.check(test.fault_schedule, prefix)
        for i, fault in enumerate(test.fault_schedule):
            try:
                await self.clients.topology_faults("SetFaults", faults.single(scenario.topology_id, fault))
            except ServiceError as exc:
                kind = fault.WhichOneof("fault") or ""
                if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
                    field, _, problem = faults.schedule_field(i, kind, exc.message, prefix).partition(": ")
                    raise InvalidArgument(field, problem) from None
                if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
                    raise FailedPrecondition(
                        f"{prefix}[{i}] ({faults.describe(fault)}) cannot run in this lab: {exc.message}"
                    ) from None
                raise

    async def _start_faults(
        self, scenario: scenario_pb2.Scenario, test: scenario_pb2.TestConfig, origin: float
    ) -> None:
        """Run the schedule from `origin` (when compute was asked), over the lab's own faults."""
        await self.stop_faults(scenario.id, heal=True)
        base = await self.clients.topology_faults(
            "ListFaults", topology_pb2.ListFaultsRequest(topology_id=scenario.topology_id)
        )
        record = FaultRunRecord(
            scenario.topology_id,
            origin,
            base=json_format.MessageToDict(base, preserving_proto_field_name=True),
        )
        run = FaultRun(scenario.id, record, faults.expand(test.fault_schedule), self.clients, self.store)
        await self.store.save_fault_run(scenario.id, record.to_json())
        self._fault_runs[scenario.id] = run
        run.start()
        log.info("scenario_faults_started", scenario_id=scenario.id, faults=len(test.fault_schedule))

    async def stop_faults(self, scenario_id: str, *, heal: bool) -> None:
        """End the scenario's fault schedule; with `heal`, the lab keeps only its own faults. A schedule
        this process does not run (it ran before a restart) is healed from its record."""
        run = self._fault_runs.pop(scenario_id, None)
        if run is not None:
            await run.stop(heal=heal)
            return
        raw = await self.store.fault_run(scenario_id)
        if raw is None:
            return
        record = FaultRunRecord.from_json(raw)
        if not record.open:
            return
        failed = await ask_lab(self.clients, record) if heal else None
        record.heal(time.time(), "" if failed is None else failed.message)
        await self.store.save_fault_run(scenario_id, record.to_json())

    async def close(self) -> None:
        """On shutdown: every running schedule stops and its lab heals (a restart would heal it too)."""
        for scenario_id in list(self._fault_runs):
            await self.stop_faults(scenario_id, heal=True)

    async def heal_abandoned(self) -> list[str]:
        """At start: a schedule recorded as running but run by no one (the service stopped while it
        ran) ends now and its lab goes back to its own faults. Returns the scenarios it healed."""
        healed: list[str] = []
        for scenario_id in await self.store.fault_run_ids():
            raw = await self.store.fault_run(scenario_id)
            if raw is None or scenario_id in self._fault_runs:
                continue
            record = FaultRunRecord.from_json(raw)
            if not record.running:
                continue
            failed = await ask_lab(self.clients, record)
            gone = isinstance(failed, ServiceError) and failed.code == grpc.StatusCode.NOT_FOUND
            error = "" if failed is None or gone else failed.message
            record.heal(time.time(), f"the scenario service restarted: healed then {error}".strip())
            await self.store.save_fault_run(scenario_id, record.to_json())
            log.warning("scenario_faults_healed_at_start", scenario_id=scenario_id, error=error)
            healed.append(scenario_id)
        return healed

    def _reply(
        self,
        action: Action,
        service: Service,
        scenario: scenario_pb2.Scenario,
        observation: Observation,
        warnings: Iterable[str] = (),
    ) -> scenario_pb2.ScenarioActionReply:
        counts = observation.counts or scenario_pb2.StatusCounts()
        name = action_name(action)
        reply = scenario_pb2.ScenarioActionReply(
            return_message=(
                translate.network_summary(name)
                if service is NETWORK
                else translate.summary(name, service.title, counts)
            ),
            service_status=status_of(scenario, service),
            scenario_status=scenario.status,
            counts=counts,
            scenario=scenario,
            warnings=warnings,
        )
        if observation.topology is not None:
            reply.topology.CopyFrom(observation.topology)
        elif observation.network is not None:
            reply.network.CopyFrom(observation.network)
        elif observation.compute is not None:
            reply.compute.CopyFrom(observation.compute)
        return reply

    # --- deleting a scenario -----------------------------------------------------------------

    async def reconcile(self) -> list[str]:
        """At start: a scenario whose topology no longer exists (deleted behind its back: `merak down`,
        a machine that restarted) stops saying it is deployed. Its compute config is deleted (its VMs
        went with the lab; compute frees their addresses) and topology and compute say NONE. Returns
        the ids of the scenarios it changed."""
        changed: list[str] = []
        await self.heal_abandoned()
        after = ""
        while True:
            scenarios, after = await self.store.page(SCENARIO, after, 200)
            for scenario in scenarios:
                if status_of(scenario, TOPOLOGY) == scenario_pb2.NONE or scenario.id in self._busy:
                    continue
                if await self._topology_exists(scenario):
                    continue
                with self._exclusive(scenario.id, "reconcile"):
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
        was = describe_statuses(scenario)
        await self.stop_faults(scenario.id, heal=False)
        if status_of(scenario, COMPUTE) != scenario_pb2.NONE:
            try:
                scenario = await self._teardown(scenario, COMPUTE)
            except MerakError as exc:
                log.warning("scenario_reconcile_compute_failed", scenario_id=scenario.id, error=exc.message)
                await self._set_status(scenario.id, COMPUTE, scenario_pb2.FAILED)
        scenario = await self._set_status(scenario.id, TOPOLOGY, scenario_pb2.NONE)
        log.warning(
            "scenario_reconciled",
            scenario_id=scenario.id,
            topology_id=scenario.topology_id,
            was=was,
            now=describe_statuses(scenario),
            reason="its topology no longer exists",
        )

    async def delete_scenario(self, scenario_id: str, teardown: bool) -> None:
        """Delete a scenario; a deployed one only with `teardown`: compute, network, topology go first."""
        if not scenario_id:
            raise InvalidArgument("id", "required")
        await self._scenario(scenario_id)
        with self._exclusive(scenario_id, "DeleteScenario"):
            scenario = await self._refresh_transitional(await self._scenario(scenario_id), owner=True)
            deployed = [s for s in reversed(SERVICES) if status_of(scenario, s) != scenario_pb2.NONE]
            if deployed and not teardown:
                raise FailedPrecondition(
                    f"scenario {scenario_id!r} is deployed ({describe_statuses(scenario)}); DELETE "
                    f"{', '.join(s.label for s in deployed)} first, or delete it with teardown"
                )
            for service in deployed:
                scenario = await self._teardown(await self._scenario(scenario_id), service)

            def still_deployed(stored: scenario_pb2.Scenario) -> None:
                if any(status_of(stored, s) != scenario_pb2.NONE for s in SERVICES):
                    raise FailedPrecondition(
                        f"scenario {scenario_id!r} is deployed ({describe_statuses(stored)})"
                    )

            await self.store.delete(SCENARIO, scenario_id, still_deployed)
            await self.store.delete_fault_run(scenario_id)
        log.info("scenario_deleted", scenario_id=scenario_id, teardown=teardown)

    async def _teardown(self, scenario: scenario_pb2.Scenario, service: Service) -> scenario_pb2.Scenario:
        configs = await self._configs(scenario)
        reply = await self._metered(
            service, scenario_pb2.DELETE, self._run(scenario, configs, service, scenario_pb2.DELETE)
        )
        scenario = reply.scenario
        if service is COMPUTE and status_of(scenario, COMPUTE) == scenario_pb2.DELETING:
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
            if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise self._teardown_timeout(scenario) from None
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise
        except TimeoutError:
            raise self._teardown_timeout(scenario) from None
        observation = await self._observe(scenario, COMPUTE)
        scenario = await self._set_status(scenario.id, COMPUTE, observation.status)
        if observation.status != scenario_pb2.NONE:
            progress = observation.compute.progress if observation.compute else compute_pb2.ComputeProgress()
            ended = status_name(observation.status)
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

    # --- following a scenario ----------------------------------------------------------------

    async def watch(self, scenario_id: str) -> AsyncIterator[scenario_pb2.ScenarioProgress]:
        """Statuses on every change, vhost counts while topology deploys, compute's progress while it works.

        Ends when no service is DEPLOYING, DELETING or UPDATING (or the scenario is deleted).
        """
        if not scenario_id:
            raise InvalidArgument("scenario_id", "required")
        scenario = await self._scenario(scenario_id)
        last = b""

        def changed(progress: scenario_pb2.ScenarioProgress) -> bool:
            nonlocal last
            encoded = progress.SerializeToString(deterministic=True)
            if encoded == last:
                return False
            last = encoded
            return True

        first = _progress(scenario)
        changed(first)
        yield first
        # A schedule that ended before the watch began is history, not news.
        windows: dict[str, tuple[Any, ...]] = {}
        if not await self._faults_running(scenario_id):
            await self._fault_events(scenario, windows)
        while True:
            found = await self.store.get(SCENARIO, scenario_id)
            if found is None:
                return
            scenario = found
            for event in await self._fault_events(scenario, windows):
                yield event
            moving = [s for s in SERVICES if status_of(scenario, s) in TRANSITIONAL]
            if not moving:
                if await self._faults_running(scenario_id):
                    await asyncio.sleep(self.settings.watch_interval)
                    continue
                for event in await self._fault_events(scenario, windows):
                    yield event
                final = _progress(scenario)
                if changed(final):
                    yield final
                return
            if scenario_id in self._busy:
                # An action is talking to the service: report what it writes, ask nothing.
                progress = _progress(scenario)
                if changed(progress):
                    yield progress
                await asyncio.sleep(self.settings.watch_interval)
                continue
            service = moving[0]
            if service is COMPUTE:
                async for progress in self._with_fault_events(
                    self._relay_compute(scenario), scenario, windows
                ):
                    if changed(progress):
                        yield progress
                scenario, _ = await self._refresh(scenario, COMPUTE)
                if status_of(scenario, COMPUTE) in TRANSITIONAL:
                    await asyncio.sleep(self.settings.watch_interval)
                continue
            scenario, observation = await self._refresh(scenario, service)
            counts = observation.counts if service is TOPOLOGY else None
            message = f"{service.label} {status_name(observation.status)}"
            if counts is not None:
                message = f"topology: {counts.ready} of {counts.total} vhosts READY"
            progress = _progress(scenario, topology=counts, message=message)
            if changed(progress):
                yield progress
            if status_of(scenario, service) in TRANSITIONAL:
                await asyncio.sleep(self.settings.watch_interval)

    async def _faults_running(self, scenario_id: str) -> bool:
        raw = await self.store.fault_run(scenario_id)
        return bool(raw and raw.get("running"))

    async def _fault_events(
        self, scenario: scenario_pb2.Scenario, seen: dict[str, tuple[Any, ...]]
    ) -> list[scenario_pb2.ScenarioProgress]:
        """A progress for each window of the scenario's schedule that began or ended since `seen`."""
        raw = await self.store.fault_run(scenario.id)
        if raw is None:
            return []
        record = FaultRunRecord.from_json(raw)
        events = []
        for key, window in sorted(record.windows.items(), key=lambda kv: (kv[1].start or 0.0, kv[0])):
            state = (window.start, window.end, window.error)
            if window.start is None or seen.get(key) == state:
                continue
            seen[key] = state
            shown = window.window(record.origin)
            events.append(_progress(scenario, fault=shown, message=faults.window_message(shown)))
        return events

    async def _with_fault_events(
        self,
        source: AsyncIterator[scenario_pb2.ScenarioProgress],
        scenario: scenario_pb2.Scenario,
        seen: dict[str, tuple[Any, ...]],
    ) -> AsyncIterator[scenario_pb2.ScenarioProgress]:
        """`source`'s progress, with the fault schedule's events (looked at every watch interval) between."""
        queue: asyncio.Queue[scenario_pb2.ScenarioProgress | None] = asyncio.Queue()

        async def relay() -> None:
            try:
                async for item in source:
                    await queue.put(item)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(relay())
        interval = self.settings.watch_interval
        next_look = time.monotonic()
        try:
            while True:
                if time.monotonic() >= next_look:
                    next_look = time.monotonic() + interval
                    for event in await self._fault_events(scenario, seen):
                        yield event
                try:
                    item = await asyncio.wait_for(queue.get(), max(0.0, next_look - time.monotonic()))
                except TimeoutError:
                    continue
                if item is None:
                    break
                yield item
            await task  # its error, if it failed
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _relay_compute(
        self, scenario: scenario_pb2.Scenario
    ) -> AsyncIterator[scenario_pb2.ScenarioProgress]:
        """Compute's WatchProgress stream as scenario progress, until compute's operation ends."""
        try:
            async for progress in self.clients.compute_progress(scenario.compute_config_id, None):
                operation = progress.operation or "operation"
                done = f"{progress.done} of {progress.total} VMs done"
                message = f"compute {operation}: {done}, {progress.error} in error"
                yield _progress(scenario, compute=progress, message=message)
                if scenario.id in self._busy:
                    return
        except ServiceError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise

    # --- connectivity test -------------------------------------------------------------------

    async def results(self, scenario_id: str) -> compute_pb2.ComputeResults:
        """The compute service's results for the scenario's compute config."""
        if not scenario_id:
            raise InvalidArgument("scenario_id", "required")
        scenario = await self._scenario(scenario_id)
        if status_of(scenario, COMPUTE) == scenario_pb2.NONE:
            raise FailedPrecondition(
                f"scenario {scenario_id!r} has no VMs deployed ({describe_statuses(scenario)}); "
                "DEPLOY compute first"
            )
        results = await self.clients.compute_results(scenario.compute_config_id)
        raw = await self.store.fault_run(scenario_id)
        if raw is not None:
            record = FaultRunRecord.from_json(raw)
            origin = results.started_at.ToSeconds() + results.started_at.nanos / 1e9
            results.faults.extend(record.fault_windows(origin if results.HasField("started_at") else None))
        return results

    async def run_test(self, request: scenario_pb2.RunTestRequest) -> scenario_pb2.TestReport:
        """Merak's pingall test config, run through the agents; compute must be READY."""
        if not request.scenario_id:
            raise InvalidArgument("scenario_id", "required")
        check_ping_waits(request.timeout_seconds, request.retry_seconds)
        scenario = await self._refresh_transitional(await self._scenario(request.scenario_id), owner=False)
        compute = status_of(scenario, COMPUTE)
        if compute != scenario_pb2.READY:
            hint = {
                scenario_pb2.NONE: "DEPLOY compute first",
                scenario_pb2.DEPLOYING: "wait until CHECK compute says READY",
                scenario_pb2.DELETING: "its VMs are being deleted",
            }.get(compute, "DELETE compute and DEPLOY it again")
            raise FailedPrecondition(f"cannot run the test: compute is {status_name(compute)}; {hint}")
        topology = await self.clients.topology(translate.topology_ref(scenario.topology_id, common_pb2.INFO))
        test_config = await self.store.get(TEST_CONFIG, scenario.test_config_id)
        settings = self.settings
        options = PingOptions(
            max_pairs=request.max_pairs,
            seed=request.seed,
            timeout=request.timeout_seconds or settings.test_timeout,
            retry=request.retry_seconds or settings.test_retry,
            concurrency=settings.test_concurrency,
            listed_failures=settings.test_listed_failures,
            pair_limit=settings.test_max_pairs,
            call_timeout=settings.call_timeout,
        )
        report = await ConnectivityTest(options).run(scenario, test_config, list(topology.compute_nodes))
        self.metrics.record_test(report)
        return report


def _progress(
    scenario: scenario_pb2.Scenario,
    *,
    topology: scenario_pb2.StatusCounts | None = None,
    compute: compute_pb2.ComputeProgress | None = None,
    fault: compute_pb2.FaultWindow | None = None,
    message: str = "",
) -> scenario_pb2.ScenarioProgress:
    progress = scenario_pb2.ScenarioProgress(
        scenario_id=scenario.id,
        status=scenario.status,
        topology_status=scenario.topology_status,
        network_status=scenario.network_status,
        compute_status=scenario.compute_status,
        message=message or describe_statuses(scenario),
        warnings=scenario.warnings,
    )
    if topology is not None:
        progress.topology.CopyFrom(topology)
    if compute is not None:
        progress.compute.CopyFrom(compute)
    if fault is not None:
        progress.fault.CopyFrom(fault)
    return progress
