"""DEPLOY, CHECK, DELETE and UPDATE of one service of a scenario: the request each service gets, the
status the scenario keeps before and after the call, and the reply. Statuses follow states.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from merak.errors import FailedPrecondition, InvalidArgument, MerakError, ServiceError
from merak.logs import get_logger
from merak.skips import Skips
from merak.v1 import common_pb2, compute_pb2, network_pb2, scenario_pb2, topology_pb2
from services.scenario import states, translate, validate
from services.scenario.clients import ServiceClients
from services.scenario.faultrun import FaultRuns
from services.scenario.metrics import ScenarioMetrics
from services.scenario.models import (
    COMPUTE,
    NETWORK,
    REFERENCE_FIELDS,
    SCENARIO,
    SERVICE_BY_NAME,
    SERVICES,
    TOPOLOGY,
    Action,
    Service,
    ServiceName,
)
from services.scenario.store import ScenarioStore
from services.scenario.tracker import Observation, StatusTracker

log = get_logger(__name__)

ACTIONS = (scenario_pb2.DEPLOY, scenario_pb2.CHECK, scenario_pb2.DELETE, scenario_pb2.UPDATE)
Reply = TypeVar(
    "Reply",
    topology_pb2.ReturnTopologyMessage,
    network_pb2.ReturnNetworkMessage,
    compute_pb2.ReturnComputeMessage,
)


@dataclass
class Configs:
    """The configs a scenario refers to."""

    topology: scenario_pb2.TopologyConfig
    network: scenario_pb2.NetworkConfig
    compute: scenario_pb2.ComputeConfig
    service: scenario_pb2.ServiceConfig | None
    test: scenario_pb2.TestConfig | None

    @classmethod
    async def of(cls, store: ScenarioStore, scenario: scenario_pb2.Scenario) -> Configs:
        """Read in one round trip; the three a service deploys must exist."""
        # In REFERENCE_FIELDS' order, which is this class's.
        found = await store.get_each([(kind, getattr(scenario, field)) for field, kind in REFERENCE_FIELDS])
        for (field, kind), config in zip(REFERENCE_FIELDS[:3], found[:3], strict=True):
            if config is None:
                # References are kept in step with the configs; this is a store edited by hand.
                raise FailedPrecondition(
                    f"{field}: {kind.label} {getattr(scenario, field)!r} of scenario {scenario.id!r} is gone"
                )
        return cls(*found)


def service_and_action(service_name: ServiceName, action: Action) -> Service:
    """The service named by the request, which must also name a known action (InvalidArgument)."""
    service = SERVICE_BY_NAME.get(int(service_name))
    if service is None:
        known = ", ".join(s.label.upper() for s in SERVICES)
        problem = "required" if service_name == scenario_pb2.SERVICE_NAME_UNSPECIFIED else "unknown service"
        raise InvalidArgument("service.service_name", f"{problem} ({int(service_name)}); known: {known}")
    if action not in ACTIONS:
        known = ", ".join(states.action_name(a) for a in ACTIONS)
        problem = "required" if action == scenario_pb2.ACTION_UNSPECIFIED else "unknown action"
        raise InvalidArgument("service.action", f"{problem} ({int(action)}); known: {known}")
    return service


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


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, MerakError):
        return exc.code.name.lower()
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "internal"


class ScenarioActions:
    """Runs one action of one service against topology, network or compute, keeping its status on the
    scenario. DEPLOY, DELETE and UPDATE own the scenario while they run; CHECK never waits."""

    def __init__(
        self,
        tracker: StatusTracker,
        fault_runs: FaultRuns,
        clients: ServiceClients,
        metrics: ScenarioMetrics,
    ) -> None:
        self.tracker = tracker
        self.store = tracker.store
        self.fault_runs = fault_runs
        self.clients = clients
        self.metrics = metrics

    async def action(
        self, scenario_id: str, service: Service, action: Action
    ) -> scenario_pb2.ScenarioActionReply:
        """Run `action` of `service`, counted and timed."""
        return await self.metered(service, action, self._action(scenario_id, service, action))

    async def metered(
        self, service: Service, action: Action, work: Awaitable[scenario_pb2.ScenarioActionReply]
    ) -> scenario_pb2.ScenarioActionReply:
        """`work`, counted by its outcome and timed."""
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            return await work
        except BaseException as exc:
            failure = exc
            raise
        finally:
            name = states.action_name(action)
            self.metrics.actions.labels(service.label, name, _outcome(failure)).inc()
            self.metrics.action_seconds.labels(service.label, name).observe(time.perf_counter() - started)

    async def _action(
        self, scenario_id: str, service: Service, action: Action
    ) -> scenario_pb2.ScenarioActionReply:
        if action == scenario_pb2.CHECK:
            return await self._check(await self.tracker.scenario(scenario_id), service)
        with self.tracker.exclusive(scenario_id, f"{states.action_name(action)} {service.label}"):
            # Read once the scenario is ours: what an action that just ended wrote is seen.
            scenario = await self.tracker.scenario(scenario_id)
            scenario = await self.tracker.refresh_moving(scenario, owner=True)
            if action == scenario_pb2.DELETE and states.status_of(scenario, service) == scenario_pb2.NONE:
                return self._nothing_to_delete(scenario, service)
            states.check_action(scenario, service, action)
            configs = await Configs.of(self.store, scenario)
            warnings: list[str] = []
            if action in (scenario_pb2.DEPLOY, scenario_pb2.UPDATE):
                warnings = _check_config(service, getattr(configs, service.label))
            if action == scenario_pb2.DEPLOY:
                await self._check_not_deployed_elsewhere(scenario, service)
            reply = await self.apply(scenario, configs, service, action, warnings)
            if reply.warnings:
                log.warning(
                    "scenario_action_skipped",
                    scenario_id=scenario_id,
                    service=service.label,
                    action=states.action_name(action),
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

    async def _check(
        self, scenario: scenario_pb2.Scenario, service: Service
    ) -> scenario_pb2.ScenarioActionReply:
        """CHECK: refresh the service's status from its INFO reply; the scenario is not moved to DEPLOYING."""
        states.check_action(scenario, service, scenario_pb2.CHECK)
        seen = states.status_of(scenario, service)
        try:
            scenario, observation = await self.tracker.refresh(scenario, service)
        except ServiceError:
            if not self.tracker.busy(scenario.id):
                await self.tracker.refresh_status(scenario.id, service, seen, scenario_pb2.FAILED)
            raise
        return self._reply(scenario_pb2.CHECK, service, scenario, observation)

    async def _check_not_deployed_elsewhere(self, scenario: scenario_pb2.Scenario, service: Service) -> None:
        """A config's id names what runs (topology, netconfig, compute config id): one scenario at a time."""
        config_id = getattr(scenario, service.config_field)
        for other_id in await self.store.scenarios_using(service.config_kind, config_id):
            if other_id == scenario.id:
                continue
            other = await self.store.get(SCENARIO, other_id)
            if other is not None and states.status_of(other, service) != scenario_pb2.NONE:
                status = states.status_name(states.status_of(other, service))
                raise FailedPrecondition(
                    f"cannot DEPLOY {service.label}: {service.config_kind.label} {config_id!r} is deployed "
                    f"by scenario {other_id!r} ({service.label} {status}); DELETE it there first"
                )

    async def apply(
        self,
        scenario: scenario_pb2.Scenario,
        configs: Configs,
        service: Service,
        action: Action,
        warnings: Sequence[str] = (),
    ) -> scenario_pb2.ScenarioActionReply:
        """DEPLOY, UPDATE or DELETE of one service, whose order and config were checked."""
        if service is TOPOLOGY:
            return await self._topology(scenario, configs, action)
        if service is NETWORK:
            return await self._network(scenario, configs, action)
        return await self._compute(scenario, configs, action, warnings)

    async def _call(
        self,
        scenario: scenario_pb2.Scenario,
        service: Service,
        action: Action,
        send: Callable[[], Awaitable[Reply]],
        gone: Reply,
    ) -> tuple[Reply, float]:
        """The service under way (its transition status), then asked; its reply and when it was asked.

        A DELETE of what the service does not have is `gone`; a call that failed leaves its status.
        """
        previous = states.status_of(scenario, service)
        await self.tracker.set_status(scenario.id, service, states.transition(action))
        asked = time.time()
        try:
            return await send(), asked
        except ServiceError as exc:
            if action == scenario_pb2.DELETE and exc.code == grpc.StatusCode.NOT_FOUND:
                return gone, asked
            status = states.after_failure(action, previous, exc.code)
            await self.tracker.set_status(scenario.id, service, status)
            log.info(
                "scenario_action_failed",
                scenario_id=scenario.id,
                service=service.label,
                action=states.action_name(action),
                code=exc.code.name,
                error=exc.message,
            )
            raise

    async def _topology(
        self, scenario: scenario_pb2.Scenario, configs: Configs, action: Action
    ) -> scenario_pb2.ScenarioActionReply:
        if action == scenario_pb2.DELETE:
            await self.fault_runs.stop(scenario.id, heal=False)  # the lab goes, its faults with it
            request = translate.topology_ref(scenario.topology_id, common_pb2.DELETE)
        else:
            request = translate.topology(configs.topology, configs.service, translate.operation(action))
        gone = topology_pb2.ReturnTopologyMessage(
            return_code=common_pb2.OK, return_message=f"topology {scenario.topology_id!r} was gone already"
        )
        reply, _ = await self._call(scenario, TOPOLOGY, action, lambda: self.clients.topology(request), gone)
        nodes = reply.compute_nodes
        status = states.after_action(action, states.topology_status(nodes))
        observation = Observation(status, translate.counts(n.status for n in nodes), topology=reply)
        scenario = await self.tracker.set_status(scenario.id, TOPOLOGY, status, reply.warnings)
        return self._reply(action, TOPOLOGY, scenario, observation, reply.warnings)

    async def _network(
        self, scenario: scenario_pb2.Scenario, configs: Configs, action: Action
    ) -> scenario_pb2.ScenarioActionReply:
        if action == scenario_pb2.DELETE:
            request = translate.network_ref(scenario.network_config_id, common_pb2.DELETE)
        else:
            nodes = await self.tracker.ready_nodes(scenario, action, NETWORK)
            request = translate.network(configs.network, configs.service, nodes, translate.operation(action))
        gone = network_pb2.ReturnNetworkMessage(
            return_code=common_pb2.OK,
            return_message=f"network config {scenario.network_config_id!r} was gone already",
        )
        reply, _ = await self._call(scenario, NETWORK, action, lambda: self.clients.network(request), gone)
        status = states.after_action(action, states.network_status())
        scenario = await self.tracker.set_status(scenario.id, NETWORK, status, reply.warnings)
        return self._reply(action, NETWORK, scenario, Observation(status, network=reply), reply.warnings)

    async def _compute(
        self, scenario: scenario_pb2.Scenario, configs: Configs, action: Action, warnings: Sequence[str]
    ) -> scenario_pb2.ScenarioActionReply:
        skips = Skips()
        if action == scenario_pb2.DELETE:
            # The lab heals before its VMs go: a crashed host's agent must be back to delete them.
            await self.fault_runs.stop(scenario.id, heal=True)
            request = translate.compute_ref(scenario.compute_config_id, scenario.id, common_pb2.DELETE)
        else:
            nodes = await self.tracker.ready_nodes(scenario, action, COMPUTE)
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
            if action == scenario_pb2.UPDATE:
                # The same request with the config as it is now: compute deletes and creates the difference.
                request.operation_type = common_pb2.UPDATE
            else:
                await self.fault_runs.check(scenario, configs.test)
        gone = compute_pb2.ReturnComputeMessage(
            return_code=common_pb2.OK,
            return_message=f"compute config {scenario.compute_config_id!r} was gone already",
        )
        reply, asked = await self._call(
            scenario, COMPUTE, action, lambda: self.clients.compute(request), gone
        )
        # Compute answers DELETE of a config it does not have without progress: nothing is left.
        progress = reply.progress if reply.HasField("progress") else None
        status = states.after_compute(action, progress)
        counts = scenario_pb2.StatusCounts() if progress is None else translate.progress_counts(progress)
        warnings = [*warnings, *skips.warnings, *reply.warnings]
        scenario = await self.tracker.set_status(scenario.id, COMPUTE, status, warnings)
        started = status in (scenario_pb2.DEPLOYING, scenario_pb2.READY)
        if action == scenario_pb2.DEPLOY and started and configs.test and configs.test.fault_schedule:
            await self.fault_runs.start(scenario, configs.test, asked)
        return self._reply(action, COMPUTE, scenario, Observation(status, counts, compute=reply), warnings)

    def _reply(
        self,
        action: Action,
        service: Service,
        scenario: scenario_pb2.Scenario,
        observation: Observation,
        warnings: Iterable[str] = (),
    ) -> scenario_pb2.ScenarioActionReply:
        counts = observation.counts or scenario_pb2.StatusCounts()
        name = states.action_name(action)
        reply = scenario_pb2.ScenarioActionReply(
            return_message=(
                translate.network_summary(name)
                if service is NETWORK
                else translate.summary(name, service.title, counts)
            ),
            service_status=states.status_of(scenario, service),
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
