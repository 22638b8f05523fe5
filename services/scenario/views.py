"""Reading a scenario: GET with the statuses that moved on, WatchScenario's progress stream (statuses,
vhost counts, compute's progress, fault windows), compute's results, and the connectivity test."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import grpc

from merak.callstats import operation_results
from merak.errors import InvalidArgument, ServiceError
from merak.ids import check_ping_waits
from merak.logs import get_logger
from merak.v1 import common_pb2, compute_pb2, scenario_pb2
from services.scenario import faults, states, translate
from services.scenario.config import ScenarioSettings
from services.scenario.faultrun import FaultRuns
from services.scenario.metrics import ScenarioMetrics
from services.scenario.models import COMPUTE, SCENARIO, TEST_CONFIG, TOPOLOGY
from services.scenario.pingall import ConnectivityTest, PingOptions
from services.scenario.tracker import StatusTracker

log = get_logger(__name__)

# A fault window as last reported, by occurrence: (start, end, error).
_Seen = dict[str, tuple[Any, ...]]


def progress_of(
    scenario: scenario_pb2.Scenario,
    *,
    topology: scenario_pb2.StatusCounts | None = None,
    compute: compute_pb2.ComputeProgress | None = None,
    fault: compute_pb2.FaultWindow | None = None,
    message: str = "",
) -> scenario_pb2.ScenarioProgress:
    """The scenario's statuses and warnings as WatchScenario sends them, with what moved."""
    progress = scenario_pb2.ScenarioProgress(
        scenario_id=scenario.id,
        status=scenario.status,
        topology_status=scenario.topology_status,
        network_status=scenario.network_status,
        compute_status=scenario.compute_status,
        message=message or states.describe_statuses(scenario),
        warnings=scenario.warnings,
    )
    if topology is not None:
        progress.topology.CopyFrom(topology)
    if compute is not None:
        progress.compute.CopyFrom(compute)
    if fault is not None:
        progress.fault.CopyFrom(fault)
    return progress


# How long a test asked while compute finishes (every VM made, the overlay being programmed) waits.
SETTLE_SECONDS = 30.0
SETTLE_POLL = 0.1


class ScenarioViews:
    """What a client reads of a scenario; statuses under way are read again from the services, and written
    only while no action owns the scenario."""

    def __init__(
        self,
        tracker: StatusTracker,
        fault_runs: FaultRuns,
        settings: ScenarioSettings,
        metrics: ScenarioMetrics,
    ) -> None:
        self.tracker = tracker
        self.store = tracker.store
        self.clients = tracker.clients
        self.fault_runs = fault_runs
        self.settings = settings
        self.metrics = metrics

    async def current(self, scenario: scenario_pb2.Scenario) -> scenario_pb2.Scenario:
        """A stored scenario with the statuses that may have moved on (DEPLOYING, DELETING) read again from
        the services: a client polling GET until compute says NONE sees it happen (unless an action runs)."""
        return await self.tracker.refresh_moving(scenario, owner=False)

    async def watch(self, scenario_id: str) -> AsyncIterator[scenario_pb2.ScenarioProgress]:
        """Statuses on every change, vhost counts while topology deploys, compute's progress while it works.

        Ends when no service is DEPLOYING, DELETING or UPDATING (or the scenario is deleted).
        """
        if not scenario_id:
            raise InvalidArgument("scenario_id", "required")
        scenario = await self.tracker.scenario(scenario_id)
        last = b""

        def changed(progress: scenario_pb2.ScenarioProgress) -> bool:
            nonlocal last
            encoded = progress.SerializeToString(deterministic=True)
            if encoded == last:
                return False
            last = encoded
            return True

        first = progress_of(scenario)
        changed(first)
        yield first
        # A schedule that ended before the watch began is history, not news.
        windows: _Seen = {}
        if not await self.fault_runs.running(scenario_id):
            await self._fault_events(scenario, windows)
        while True:
            found = await self.store.get(SCENARIO, scenario_id)
            if found is None:
                return
            scenario = found
            for event in await self._fault_events(scenario, windows):
                yield event
            moving = states.moving(scenario)
            if not moving:
                if await self.fault_runs.running(scenario_id):
                    await asyncio.sleep(self.settings.watch_interval)
                    continue
                for event in await self._fault_events(scenario, windows):
                    yield event
                final = progress_of(scenario)
                if changed(final):
                    yield final
                return
            if self.tracker.busy(scenario_id):
                # An action is talking to the service: report what it writes, ask nothing.
                progress = progress_of(scenario)
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
                scenario, _ = await self.tracker.refresh(scenario, COMPUTE)
                if states.status_of(scenario, COMPUTE) in states.TRANSITIONAL:
                    await asyncio.sleep(self.settings.watch_interval)
                continue
            scenario, observation = await self.tracker.refresh(scenario, service)
            counts = observation.counts if service is TOPOLOGY else None
            message = f"{service.label} {states.status_name(observation.status)}"
            if counts is not None:
                message = f"topology: {counts.ready} of {counts.total} vhosts READY"
            progress = progress_of(scenario, topology=counts, message=message)
            if changed(progress):
                yield progress
            if states.status_of(scenario, service) in states.TRANSITIONAL:
                await asyncio.sleep(self.settings.watch_interval)

    async def _fault_events(
        self, scenario: scenario_pb2.Scenario, seen: _Seen
    ) -> list[scenario_pb2.ScenarioProgress]:
        """A progress for each window of the scenario's schedule that began or ended since `seen`."""
        record = await self.fault_runs.record(scenario.id)
        if record is None:
            return []
        events = []
        for key, window in sorted(record.windows.items(), key=lambda kv: (kv[1].start or 0.0, kv[0])):
            state = (window.start, window.end, window.error)
            if window.start is None or seen.get(key) == state:
                continue
            seen[key] = state
            shown = window.window(record.origin)
            events.append(progress_of(scenario, fault=shown, message=faults.window_message(shown)))
        return events

    async def _with_fault_events(
        self,
        source: AsyncIterator[scenario_pb2.ScenarioProgress],
        scenario: scenario_pb2.Scenario,
        seen: _Seen,
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
                yield progress_of(scenario, compute=progress, message=message)
                if self.tracker.busy(scenario.id):
                    return
        except ServiceError as exc:
            if exc.code != grpc.StatusCode.NOT_FOUND:
                raise

    async def results(self, scenario_id: str) -> compute_pb2.ComputeResults:
        """The compute service's results for the scenario's compute config."""
        if not scenario_id:
            raise InvalidArgument("scenario_id", "required")
        scenario = await self.tracker.scenario(scenario_id)
        states.check_has_vms(scenario)
        results = await self.clients.compute_results(scenario.compute_config_id)
        origin = results.started_at.ToSeconds() + results.started_at.nanos / 1e9
        record = await self.fault_runs.record(scenario_id)
        if record is not None:
            results.faults.extend(record.fault_windows(origin if results.HasField("started_at") else None))
        if results.HasField("started_at") and scenario.topology_id:
            await self._process_stats(results, scenario.topology_id, origin)
        if scenario.network_config_id:
            await self._network_calls(results, scenario.network_config_id)
        return results

    async def _network_calls(self, results: compute_pb2.ComputeResults, netconfig_id: str) -> None:
        """The network config's own calls into its control plane (Alcor's VPCs, subnets, groups, routers,
        node registration) beside the VMs' port calls; left out when the network service cannot tell."""
        try:
            network = await self.clients.network(translate.network_ref(netconfig_id, common_pb2.INFO))
        except ServiceError as exc:
            log.info("network_calls_unavailable", netconfig_id=netconfig_id, code=exc.code.name)
            return
        by_operation: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
        for call in network.calls:
            by_operation[call.operation].append((call.code, call.seconds, call.at))
        for operation, calls in sorted(by_operation.items()):
            results.operations.append(operation_results(network.plugin, operation, calls))

    async def _process_stats(
        self, results: compute_pb2.ComputeResults, topology_id: str, origin: float
    ) -> None:
        """The control plane's processes over the run (OVN), `at` made seconds since the operation
        started; left out when the topology service cannot tell (results do not fail for them)."""
        try:
            stats = await self.clients.topology_process_stats(topology_id, origin)
        except ServiceError as exc:
            log.info("process_stats_unavailable", topology_id=topology_id, code=exc.code.name)
            return
        for group in stats.groups:
            for sample in group.samples:
                sample.at = round(sample.at - origin, 3)
        for chassis in stats.chassis:
            chassis.at = round(chassis.at - origin, 3)
        results.processes.extend(stats.groups)
        results.chassis.extend(stats.chassis)

    async def _settled(self, scenario: scenario_pb2.Scenario) -> scenario_pb2.Scenario:
        """A deployment whose VMs are all made ("n out of n done!", which Merak's clients wait for) but
        whose operation is still finishing (the overlay is being programmed) is waited for, a bounded
        while, rather than refused: a test asked at that moment runs once compute is READY."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while states.status_of(scenario, COMPUTE) == scenario_pb2.DEPLOYING and not self.tracker.busy(
            scenario.id
        ):
            try:
                observation = await self.tracker.observe(scenario, COMPUTE)
            except ServiceError:
                return scenario
            progress = observation.compute.progress if observation.compute is not None else None
            if progress is None or not progress.total or progress.done < progress.total:
                return scenario  # VMs still being made: refused as before
            if observation.status != scenario_pb2.DEPLOYING:  # written as any refresh writes it
                return await self.tracker.refresh_status(
                    scenario.id, COMPUTE, scenario_pb2.DEPLOYING, observation.status
                )
            if time.monotonic() >= deadline:
                return scenario
            await asyncio.sleep(SETTLE_POLL)
        return scenario

    async def run_test(self, request: scenario_pb2.RunTestRequest) -> scenario_pb2.TestReport:
        """Merak's pingall test config, run through the agents; compute must be READY."""
        if not request.scenario_id:
            raise InvalidArgument("scenario_id", "required")
        check_ping_waits(request.timeout_seconds, request.retry_seconds)
        scenario = await self.tracker.scenario(request.scenario_id)
        scenario = await self._settled(await self.tracker.refresh_moving(scenario, owner=False))
        states.check_testable(states.status_of(scenario, COMPUTE))
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
