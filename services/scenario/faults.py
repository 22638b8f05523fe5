"""A test config's fault schedule: checked, expanded into occurrences, and the lab's faults at any moment
of it (what SetFaults is asked for at each start and end). No I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from merak.errors import InvalidArgument
from merak.faultspec import (
    CENTRAL_PROCESSES,
    HOST_PROCESSES,
    host_state,
    link_what,
    link_where,
    partition_what,
    process_where,
)
from merak.v1 import compute_pb2, scenario_pb2, topology_pb2

MAX_SECONDS = 7 * 86_400
MAX_REPEAT = 1_000
MAX_OCCURRENCES = 10_000
MAX_NAME = 64
# Which host fault wins when two hold the same vhost: a crash outlasts a freeze.
_HOST_RANK = {topology_pb2.HOST_RUNNING: 0, topology_pb2.HOST_FROZEN: 1, topology_pb2.HOST_CRASHED: 2}
# A topology error names the field of its one-fault request; the schedule's field is said instead.
_REQUEST_FIELDS = {
    "link": "links[0]",
    "partition": "partitions[0]",
    "host": "hosts[0]",
    "process": "processes[0]",
}


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One time a scheduled fault happens: seconds after the schedule's origin; `end` None = held."""

    index: int
    occurrence: int
    name: str
    start: float
    end: float | None
    fault: scenario_pb2.ScheduledFault

    @property
    def key(self) -> str:
        """Stable id of the occurrence within its schedule."""
        return f"{self.index}.{self.occurrence}"


def _seconds(field: str, value: float, *, positive: bool = False) -> None:
    if not math.isfinite(value) or value < 0 or value > MAX_SECONDS or (positive and value == 0):
        low = "above 0" if positive else "0"
        raise InvalidArgument(field, f"{value!r}: seconds from {low} to {MAX_SECONDS}")


def check(schedule: Sequence[scenario_pb2.ScheduledFault], prefix: str = "fault_schedule") -> None:
    """InvalidArgument naming the first bad field; what only the lab can tell is checked by its
    topology service (SetFaults' validate_only) when compute is deployed."""
    total = 0
    names: set[str] = set()
    for i, fault in enumerate(schedule):
        where = f"{prefix}[{i}]"
        if len(fault.name) > MAX_NAME or not fault.name.isprintable():
            raise InvalidArgument(f"{where}.name", f"at most {MAX_NAME} printable characters")
        name = fault.name or f"fault-{i}"
        if name in names:
            raise InvalidArgument(f"{where}.name", f"{name!r} names two faults")
        names.add(name)
        _seconds(f"{where}.at_seconds", fault.at_seconds)
        _seconds(f"{where}.duration_seconds", fault.duration_seconds)
        if fault.repeat:
            if fault.repeat > MAX_REPEAT:
                raise InvalidArgument(f"{where}.repeat", f"at most {MAX_REPEAT}")
            if not fault.duration_seconds:
                raise InvalidArgument(
                    f"{where}.repeat", "a fault held until compute is deleted cannot repeat"
                )
            _seconds(f"{where}.every_seconds", fault.every_seconds, positive=True)
            if fault.every_seconds <= fault.duration_seconds:
                raise InvalidArgument(
                    f"{where}.every_seconds",
                    f"{fault.every_seconds:g} must exceed duration_seconds ({fault.duration_seconds:g})",
                )
        total += fault.repeat + 1
        kind = fault.WhichOneof("fault")
        if kind is None:
            raise InvalidArgument(f"{where}.fault", "one of link, partition, host or process is required")
        if kind == "link":
            link = fault.link
            if not link.node:
                raise InvalidArgument(f"{where}.link.node", "required")
            if not (link.down or link.rate_bps or link.loss_percent or link.delay_ms or link.jitter_ms):
                raise InvalidArgument(
                    f"{where}.link", "nothing to do: set down, rate_bps, loss_percent or delay_ms"
                )
        elif kind == "host" and fault.host.state == topology_pb2.HOST_RUNNING:
            raise InvalidArgument(f"{where}.host.state", "HOST_CRASHED or HOST_FROZEN")
        elif kind == "process":
            _check_process(f"{where}.process", fault.process)
    if total > MAX_OCCURRENCES:
        raise InvalidArgument(prefix, f"{total} occurrences in all; at most {MAX_OCCURRENCES}")


def _check_process(where: str, fault: topology_pb2.ProcessFault) -> None:
    if fault.process not in (*CENTRAL_PROCESSES, *HOST_PROCESSES):
        known = ", ".join((*CENTRAL_PROCESSES, *HOST_PROCESSES))
        raise InvalidArgument(f"{where}.process", f"{fault.process[:64]!r} is not one of {known}")
    if (fault.process in HOST_PROCESSES) != bool(fault.vhost):
        need = "the vhost whose" if fault.process in HOST_PROCESSES else "no vhost: the central's"
        raise InvalidArgument(f"{where}.vhost", f"{fault.process} takes {need}")
    if fault.state == topology_pb2.HOST_RUNNING:
        raise InvalidArgument(f"{where}.state", "HOST_CRASHED or HOST_FROZEN")


def expand(schedule: Sequence[scenario_pb2.ScheduledFault]) -> list[Occurrence]:
    """Every occurrence of every fault, in start order (a checked schedule)."""
    found: list[Occurrence] = []
    for i, fault in enumerate(schedule):
        for n in range(fault.repeat + 1):
            start = fault.at_seconds + n * fault.every_seconds
            end = start + fault.duration_seconds if fault.duration_seconds else None
            found.append(Occurrence(i, n, fault.name or f"fault-{i}", start, end, fault))
    return sorted(found, key=lambda o: (o.start, o.index, o.occurrence))


def moments(occurrences: Iterable[Occurrence]) -> list[float]:
    """When the lab's faults change: every start and every end, in order."""
    return sorted({o.start for o in occurrences} | {o.end for o in occurrences if o.end is not None})


def active(occurrences: Iterable[Occurrence], at: float) -> list[Occurrence]:
    """What the lab suffers from `at` on (until the next moment)."""
    return [o for o in occurrences if o.start <= at and (o.end is None or at < o.end)]


def single(topology_id: str, fault: scenario_pb2.ScheduledFault) -> topology_pb2.SetFaultsRequest:
    """One scheduled fault alone, to be checked by the lab (validate_only)."""
    request = topology_pb2.SetFaultsRequest(topology_id=topology_id, validate_only=True)
    _add(request, fault)
    return request


def schedule_field(index: int, kind: str, message: str, prefix: str = "fault_schedule") -> str:
    """A topology error about `single`'s request, naming the schedule's field instead."""
    inner = _REQUEST_FIELDS.get(kind, "")
    if inner and message.startswith(inner):
        return f"{prefix}[{index}].{kind}{message[len(inner) :]}"
    return f"{prefix}[{index}]: {message}"


def _add(request: topology_pb2.SetFaultsRequest, fault: scenario_pb2.ScheduledFault) -> None:
    kind = fault.WhichOneof("fault")
    if kind == "link":
        request.links.append(fault.link)
    elif kind == "partition":
        request.partitions.append(fault.partition)
    elif kind == "host":
        request.hosts.append(fault.host)
    elif kind == "process":
        request.processes.append(fault.process)


def lab_faults(
    topology_id: str, base: topology_pb2.FaultsReply, now: Iterable[Occurrence]
) -> topology_pb2.SetFaultsRequest:
    """The lab's own faults (`base`) with the occurrences `now` on top; one link or vhost named twice
    suffers the worst of each setting (down if any is, the lowest rate, the highest loss and delay)."""
    request = topology_pb2.SetFaultsRequest(topology_id=topology_id)
    request.partitions.extend(base.partitions)
    links: dict[tuple[str, str], topology_pb2.LinkFault] = {}
    hosts: dict[str, topology_pb2.HostFault] = {}
    processes: dict[str, topology_pb2.ProcessFault] = {}
    extra = topology_pb2.SetFaultsRequest()
    for occurrence in now:
        _add(extra, occurrence.fault)
    for link in [*base.links, *extra.links]:
        held = links.setdefault((link.node, link.nic), topology_pb2.LinkFault(node=link.node, nic=link.nic))
        held.down = held.down or link.down
        rates = [r for r in (held.rate_bps, link.rate_bps) if r]
        held.rate_bps = min(rates, default=0)
        held.loss_percent = max(held.loss_percent, link.loss_percent)
        held.delay_ms = max(held.delay_ms, link.delay_ms)
        held.jitter_ms = max(held.jitter_ms, link.jitter_ms)
    for host in [*base.hosts, *extra.hosts]:
        held_host = hosts.get(host.vhost)
        if held_host is None or _HOST_RANK.get(host.state, 0) > _HOST_RANK.get(held_host.state, 0):
            hosts[host.vhost] = host
    for process in [*base.processes, *extra.processes]:
        target = process_where(process)
        held_process = processes.get(target)
        if held_process is None or _HOST_RANK.get(process.state, 0) > _HOST_RANK.get(held_process.state, 0):
            processes[target] = process
    request.links.extend(links.values())
    request.partitions.extend(extra.partitions)
    request.hosts.extend(hosts.values())
    request.processes.extend(processes.values())
    return request


def describe(fault: scenario_pb2.ScheduledFault) -> str:
    """For people: "link vhost-1: loss 10%", "partition vhost-0 | vhost-1", "host vhost-2: crashed",
    "process ovn-controller@vhost-1: frozen"."""
    kind = fault.WhichOneof("fault")
    if kind == "link":
        return f"link {link_where(fault.link)}: {link_what(fault.link)}"
    if kind == "partition":
        return f"partition {partition_what(fault.partition)}"
    if kind == "host":
        return f"host {fault.host.vhost}: {host_state(fault.host)}"
    if kind == "process":
        return f"process {process_where(fault.process)}: {host_state(fault.process)}"
    return "nothing"


def window_message(window: compute_pb2.FaultWindow) -> str:
    """A WatchScenario line about a window that just changed."""
    if window.ended:
        said = f"fault {window.name!r} ended at {window.end_second:.1f}s ({window.description})"
    else:
        said = f"fault {window.name!r} started at {window.start_second:.1f}s: {window.description}"
    return f"{said}; error: {window.error}" if window.error else said
