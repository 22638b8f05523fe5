"""The action state machine: which action may run in which state, and statuses read from replies; no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from merak.errors import FailedPrecondition
from merak.v1 import common_pb2, compute_pb2, scenario_pb2
from services.scenario.models import (
    SERVICES,
    TRANSITIONAL,
    Action,
    Service,
    Status,
    action_name,
    status_name,
    status_of,
)


def _blocked(action: Action, service: Service, reason: str) -> FailedPrecondition:
    return FailedPrecondition(f"cannot {action_name(action)} {service.label}: {reason}")


def _own_state_hint(service: Service, status: Status) -> str:
    if status == scenario_pb2.READY:
        return "it is deployed already (DELETE it first to deploy it again)"
    if status == scenario_pb2.DEPLOYING:
        return f"its deployment is under way; CHECK {service.label} until it is READY"
    if status == scenario_pb2.DELETING:
        return f"its deletion is under way; CHECK {service.label} until it is NONE"
    if status == scenario_pb2.UPDATING:
        return "an update is under way"
    return f"DEPLOY {service.label} first"


def _earlier_hint(other: Service, status: Status) -> str:
    """What to do about a service that must be READY first."""
    if status == scenario_pb2.DEPLOYING:
        return f"wait until CHECK {other.label} says READY"
    if status == scenario_pb2.FAILED:
        return f"DELETE {other.label} and DEPLOY it again"
    if status == scenario_pb2.DELETING:
        return f"wait until its DELETE is over, then DEPLOY {other.label}"
    return f"DEPLOY {other.label} first"


def _later_hint(other: Service, status: Status) -> str:
    """What to do about a service that must be NONE first."""
    if status == scenario_pb2.DELETING:
        return f"wait until its DELETE is over (CHECK {other.label})"
    return f"DELETE {other.label} first"


def check_action(scenario: scenario_pb2.Scenario, service: Service, action: Action) -> None:
    """Raise FailedPrecondition, naming the service that blocks it, unless the action may run now.

    Merak's order: deploy topology → network → compute, delete compute → network → topology.
    """
    position = SERVICES.index(service)
    earlier, later = SERVICES[:position], SERVICES[position + 1 :]
    status = status_of(scenario, service)
    if action == scenario_pb2.CHECK:
        if status == scenario_pb2.NONE:
            raise _blocked(
                action, service, f"{service.label} is not deployed (NONE); DEPLOY {service.label} first"
            )
        return
    if action == scenario_pb2.DEPLOY:
        if status not in (scenario_pb2.NONE, scenario_pb2.FAILED):
            hint = _own_state_hint(service, status)
            raise _blocked(action, service, f"{service.label} is {status_name(status)}; {hint}")
        for other in earlier:
            other_status = status_of(scenario, other)
            if other_status != scenario_pb2.READY:
                hint = _earlier_hint(other, other_status)
                raise _blocked(action, service, f"{other.label} is {status_name(other_status)}; {hint}")
    elif action == scenario_pb2.DELETE:
        if status == scenario_pb2.NONE:
            raise _blocked(action, service, f"{service.label} is not deployed (NONE)")
    elif action == scenario_pb2.UPDATE and status != scenario_pb2.READY:
        reason = f"{service.label} is {status_name(status)}; only a READY service can be updated"
        raise _blocked(action, service, reason)
    if action == scenario_pb2.UPDATE:
        # A running lab changes under what runs on it (each service refuses what it cannot do), but
        # not under a service that is still being deployed, updated or deleted on it.
        for other in later:
            other_status = status_of(scenario, other)
            if other_status in TRANSITIONAL:
                reason = (
                    f"{other.label} is {status_name(other_status)}; wait until it is over "
                    f"(CHECK {other.label})"
                )
                raise _blocked(action, service, reason)
        return
    # Whatever comes after this service must be gone first (Merak: every action but CHECK needs it).
    for other in reversed(later):
        other_status = status_of(scenario, other)
        if other_status != scenario_pb2.NONE:
            hint = _later_hint(other, other_status)
            raise _blocked(action, service, f"{other.label} is {status_name(other_status)}; {hint}")


def topology_status(nodes: Iterable[common_pb2.InternalComputeInfo]) -> Status:
    """A topology is READY when every vhost is; any vhost in ERROR makes it FAILED."""
    statuses = [n.status for n in nodes]
    if any(s == common_pb2.ERROR for s in statuses):
        return scenario_pb2.FAILED
    if statuses and all(s == common_pb2.READY for s in statuses):
        return scenario_pb2.READY
    return scenario_pb2.DEPLOYING


def compute_status(progress: compute_pb2.ComputeProgress) -> Status:
    """From compute's progress: running → DEPLOYING/DELETING; over → READY, NONE (deleted) or FAILED."""
    deleting = progress.operation.upper() == "DELETE"
    if not progress.finished:
        if progress.operation.upper() == "UPDATE":
            return scenario_pb2.UPDATING
        return scenario_pb2.DELETING if deleting else scenario_pb2.DEPLOYING
    if progress.failure or progress.error:
        return scenario_pb2.FAILED
    if deleting:
        return scenario_pb2.NONE
    return scenario_pb2.READY if progress.done == progress.total else scenario_pb2.FAILED


def compute_failure(progress: compute_pb2.ComputeProgress) -> str:
    """Why compute's operation failed, for messages."""
    parts = []
    if progress.failure:
        parts.append(progress.failure)
    if progress.error:
        parts.append(f"{progress.error} VMs in ERROR")
    if progress.errors:
        parts.append("first errors: " + "; ".join(progress.errors[:3]))
    if not parts and progress.done != progress.total:
        parts.append(f"{progress.done} of {progress.total} VMs done")
    return ", ".join(parts)
