"""A scenario's fault schedule, running: at each start and end the lab is asked (SetFaults) for its own
faults plus the occurrences of that moment; every window is recorded for WatchScenario and the results.
FaultRuns holds the schedules this process runs, and heals the labs of those no one runs any more."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format

from merak.errors import FailedPrecondition, InvalidArgument, MerakError, ServiceError
from merak.logs import get_logger
from merak.v1 import compute_pb2, scenario_pb2, topology_pb2
from services.scenario import faults
from services.scenario.clients import ServiceClients
from services.scenario.faults import Occurrence
from services.scenario.store import ScenarioStore

log = get_logger(__name__)


@dataclass
class WindowRecord:
    """One occurrence as it happened: wall-clock start and end (None: not yet), what went wrong."""

    name: str
    description: str
    occurrence: int
    start: float | None = None
    end: float | None = None
    error: str = ""

    def window(self, origin: float) -> compute_pb2.FaultWindow:
        """As the API says it: seconds since `origin`."""
        return compute_pb2.FaultWindow(
            name=self.name,
            description=self.description,
            occurrence=self.occurrence,
            start_second=round((self.start or origin) - origin, 3),
            end_second=round(self.end - origin, 3) if self.end is not None else 0.0,
            ended=self.end is not None,
            error=self.error,
        )


@dataclass
class FaultRunRecord:
    """What the store keeps of a scenario's schedule: enough to report it, to follow it, and to heal the
    lab after a restart (`base`: the lab's own faults when the schedule began)."""

    topology_id: str
    origin: float
    running: bool = True
    base: dict[str, Any] = field(default_factory=dict)
    windows: dict[str, WindowRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """For the store."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRunRecord:
        """From the store."""
        windows = {key: WindowRecord(**value) for key, value in data.get("windows", {}).items()}
        return cls(
            topology_id=str(data["topology_id"]),
            origin=float(data["origin"]),
            running=bool(data.get("running", False)),
            base=dict(data.get("base", {})),
            windows=windows,
        )

    def base_faults(self) -> topology_pb2.FaultsReply:
        """The lab's own faults when the schedule began."""
        return json_format.ParseDict(self.base, topology_pb2.FaultsReply(), ignore_unknown_fields=True)

    def fault_windows(self, origin: float | None = None) -> list[compute_pb2.FaultWindow]:
        """The windows that began, in start order, in seconds since `origin` (default: the schedule's)."""
        since = self.origin if origin is None else origin
        begun = [w for w in self.windows.values() if w.start is not None]
        return [w.window(since) for w in sorted(begun, key=lambda w: (w.start or 0.0, w.name, w.occurrence))]

    @property
    def open(self) -> list[WindowRecord]:
        """The windows that began and have not ended."""
        return [w for w in self.windows.values() if w.start is not None and w.end is None]

    def heal(self, stamp: float, error: str = "") -> None:
        """Every window still open ends now."""
        for window in self.open:
            window.end = stamp
            window.error = window.error or error
        self.running = False


async def ask_lab(
    clients: ServiceClients, record: FaultRunRecord, now: Sequence[Occurrence] = ()
) -> MerakError | None:
    """Ask the lab (SetFaults) for its own faults plus the occurrences `now`; what failed, if anything."""
    try:
        await clients.topology_faults(
            "SetFaults", faults.lab_faults(record.topology_id, record.base_faults(), now)
        )
    except MerakError as exc:
        return exc
    return None


class FaultRun:
    """Runs one schedule against one lab until its last timed fault ended; `stop` heals the lab."""

    def __init__(
        self,
        scenario_id: str,
        record: FaultRunRecord,
        occurrences: list[Occurrence],
        clients: ServiceClients,
        store: ScenarioStore,
    ) -> None:
        self.scenario_id = scenario_id
        self.record = record
        self.occurrences = occurrences
        self.clients = clients
        self.store = store
        self.task: asyncio.Task[None] | None = None
        for o in occurrences:
            record.windows[o.key] = WindowRecord(o.name, faults.describe(o.fault), o.occurrence)

    def start(self) -> None:
        """Run in the background."""
        self.task = asyncio.create_task(self._logged(), name=f"faults-{self.scenario_id}")

    async def _logged(self) -> None:
        try:
            await self._run()
        except Exception:
            # The store or the loop failed under it: say so once (a watch must not wait for it);
            # `stop` still heals the lab.
            log.exception("scenario_faults_failed", scenario_id=self.scenario_id)
            self.record.running = False
            with contextlib.suppress(Exception):
                await self.store.save_fault_run(self.scenario_id, self.record.to_json())

    async def _apply(self, now: list[Occurrence]) -> str:
        """Ask the lab for its own faults plus `now`; the error, if any."""
        failed = await ask_lab(self.clients, self.record, now)
        return "" if failed is None else str(failed)

    async def _run(self) -> None:
        previous: dict[str, Occurrence] = {}
        failed: set[str] = set()
        for moment in faults.moments(self.occurrences):
            # A timer, not a wait for a condition: the schedule says when.
            await asyncio.sleep(max(0.0, self.record.origin + moment - time.time()))
            now = {o.key: o for o in faults.active(self.occurrences, moment) if o.key not in failed}
            started = [key for key in now if key not in previous]
            ended = [key for key in previous if key not in now]
            error = await self._apply(list(now.values()))
            if error and started:
                # What began with this moment is what the lab refused: leave it out, keep the rest.
                failed.update(started)
                now = {k: o for k, o in now.items() if k not in failed}
                retried = await self._apply(list(now.values()))
                error = retried and f"{retried} (after leaving out what failed: {error})"
            stamp = time.time()
            for key in started:
                window = self.record.windows[key]
                window.start = stamp
                if key in failed:
                    window.end, window.error = stamp, error or "the lab refused it"
            for key in ended:
                window = self.record.windows[key]
                window.end, window.error = stamp, window.error or error
            if error and not started:
                log.warning("scenario_fault_heal_failed", scenario_id=self.scenario_id, error=error)
            for key in started + ended:
                w = self.record.windows[key]
                log.info(
                    "scenario_fault",
                    scenario_id=self.scenario_id,
                    fault=w.name,
                    occurrence=w.occurrence,
                    change="ended" if w.end is not None else "started",
                    at=round(stamp - self.record.origin, 3),
                    error=w.error,
                )
            previous = now
            await self.store.save_fault_run(self.scenario_id, self.record.to_json())
        self.record.running = False
        await self.store.save_fault_run(self.scenario_id, self.record.to_json())

    async def stop(self, *, heal: bool) -> None:
        """Cancel what is left of the schedule; with `heal`, the lab keeps only its own faults."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        # Healed whatever the windows say: a SetFaults cancelled in flight may have taken effect.
        error = await self._apply([]) if heal else ""
        self.record.heal(time.time(), error)
        await self.store.save_fault_run(self.scenario_id, self.record.to_json())
        log.info("scenario_faults_stopped", scenario_id=self.scenario_id, healed=heal, error=error)


class FaultRuns:
    """The fault schedules of the scenarios, by scenario: run here, or recorded by a process that ran them."""

    def __init__(self, store: ScenarioStore, clients: ServiceClients) -> None:
        self.store = store
        self.clients = clients
        self._runs: dict[str, FaultRun] = {}

    async def record(self, scenario_id: str) -> FaultRunRecord | None:
        """The scenario's schedule as it ran (or runs), or None."""
        raw = await self.store.fault_run(scenario_id)
        return None if raw is None else FaultRunRecord.from_json(raw)

    async def running(self, scenario_id: str) -> bool:
        """Whether the scenario's schedule is recorded as running."""
        raw = await self.store.fault_run(scenario_id)
        return bool(raw and raw.get("running"))

    async def check(self, scenario: scenario_pb2.Scenario, test: scenario_pb2.TestConfig | None) -> None:
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
                    # Deliberate: the topology's words name a field of the request made from this
                    # fault; the caller's field is the schedule's.
                    field, _, problem = faults.schedule_field(i, kind, exc.details, prefix).partition(": ")
                    raise InvalidArgument(field, problem) from None
                if exc.code == grpc.StatusCode.FAILED_PRECONDITION:
                    raise FailedPrecondition(
                        f"{prefix}[{i}] ({faults.describe(fault)}) cannot run in this lab: {exc.message}"
                    ) from None
                raise

    async def start(
        self, scenario: scenario_pb2.Scenario, test: scenario_pb2.TestConfig, origin: float
    ) -> None:
        """Run the schedule from `origin` (when compute was asked), over the lab's own faults."""
        await self.stop(scenario.id, heal=True)
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
        self._runs[scenario.id] = run
        run.start()
        log.info("scenario_faults_started", scenario_id=scenario.id, faults=len(test.fault_schedule))

    async def stop(self, scenario_id: str, *, heal: bool) -> None:
        """End the scenario's fault schedule; with `heal`, the lab keeps only its own faults. A schedule
        this process does not run (it ran before a restart) is healed from its record."""
        run = self._runs.pop(scenario_id, None)
        if run is not None:
            await run.stop(heal=heal)
            return
        record = await self.record(scenario_id)
        if record is None or not record.open:
            return
        failed = await ask_lab(self.clients, record) if heal else None
        record.heal(time.time(), "" if failed is None else failed.message)
        await self.store.save_fault_run(scenario_id, record.to_json())

    async def forget(self, scenario_id: str) -> None:
        """Drop the record of a deleted scenario's schedule."""
        await self.store.delete_fault_run(scenario_id)

    async def close(self) -> None:
        """On shutdown: every running schedule stops and its lab heals (a restart would heal it too)."""
        for scenario_id in list(self._runs):
            await self.stop(scenario_id, heal=True)

    async def heal_abandoned(self) -> list[str]:
        """At start: a schedule recorded as running but run by no one (the service stopped while it
        ran) ends now and its lab goes back to its own faults. Returns the scenarios it healed."""
        healed: list[str] = []
        for scenario_id in await self.store.fault_run_ids():
            if scenario_id in self._runs:
                continue
            record = await self.record(scenario_id)
            if record is None or not record.running:
                continue
            failed = await ask_lab(self.clients, record)
            gone = isinstance(failed, ServiceError) and failed.code == grpc.StatusCode.NOT_FOUND
            error = "" if failed is None or gone else failed.message
            record.heal(time.time(), f"the scenario service restarted: healed then {error}".strip())
            await self.store.save_fault_run(scenario_id, record.to_json())
            log.warning("scenario_faults_healed_at_start", scenario_id=scenario_id, error=error)
            healed.append(scenario_id)
        return healed
