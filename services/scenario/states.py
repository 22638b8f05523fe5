"""A scenario's statuses, derived here and nowhere else: each service's status (from its replies, its
actions, their failures), the scenario's overall status, which action may run in which state, and the
hints that say what to do instead. No I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc

from merak.errors import FailedPrecondition, enum_name
from merak.v1 import common_pb2, compute_pb2, scenario_pb2
from services.scenario.models import COMPUTE, SCENARIO, SERVICES, Action, Service, Status, now

# A status that moves on by itself: the service is still at work.
TRANSITIONAL: frozenset[Status] = frozenset(
    {scenario_pb2.DEPLOYING, scenario_pb2.DELETING, scenario_pb2.UPDATING}
)
# The status a service takes while an action that changes it runs.
_TRANSITIONS: dict[Action, Status] = {
    scenario_pb2.DEPLOY: scenario_pb2.DEPLOYING,
    scenario_pb2.UPDATE: scenario_pb2.UPDATING,
    scenario_pb2.DELETE: scenario_pb2.DELETING,
}
# An UPDATE the service turned down leaves the service as it was.
_REJECTED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
)


# --- reading and writing a scenario's statuses ---------------------------------------------------


def status_name(status: Status) -> str:
    """NONE, DEPLOYING, READY, ..."""
    return enum_name(scenario_pb2.ServiceStatus, status)


def action_name(action: Action) -> str:
    """DEPLOY, CHECK, DELETE or UPDATE."""
    return enum_name(scenario_pb2.Action, action)


def status_of(scenario: scenario_pb2.Scenario, service: Service) -> Status:
    """The status of one service of a scenario."""
    status: Status = getattr(scenario, service.status_field)
    return status


def deployed(scenario: scenario_pb2.Scenario) -> list[Service]:
    """The services that are not NONE, in deploy order."""
    return [s for s in SERVICES if status_of(scenario, s) != scenario_pb2.NONE]


def moving(scenario: scenario_pb2.Scenario) -> list[Service]:
    """The services whose status may move on by itself (DEPLOYING, DELETING, UPDATING)."""
    return [s for s in SERVICES if status_of(scenario, s) in TRANSITIONAL]


def describe_statuses(scenario: scenario_pb2.Scenario) -> str:
    """The service statuses for a message, e.g. "topology READY, network NONE, compute NONE"."""
    return ", ".join(f"{s.label} {status_name(status_of(scenario, s))}" for s in SERVICES)


def overall(statuses: Sequence[Status]) -> Status:
    """The scenario status from its services': FAILED wins, then a transition, READY if all are, else DONE."""
    if scenario_pb2.FAILED in statuses:
        return scenario_pb2.FAILED
    for transition in (scenario_pb2.DELETING, scenario_pb2.DEPLOYING, scenario_pb2.UPDATING):
        if transition in statuses:
            return transition
    if all(s == scenario_pb2.READY for s in statuses):
        return scenario_pb2.READY
    if all(s == scenario_pb2.NONE for s in statuses):
        return scenario_pb2.NONE
    # Some services deployed and nothing running: the last action is done.
    return scenario_pb2.DONE


def with_status(scenario: scenario_pb2.Scenario, service: Service, status: Status) -> scenario_pb2.Scenario:
    """A copy of the scenario with one service's status set, the overall status recomputed, updated_at now."""
    if status_of(scenario, service) == status:
        return scenario
    result = SCENARIO.copy(scenario)
    setattr(result, service.status_field, status)
    result.status = overall([status_of(result, s) for s in SERVICES])
    result.updated_at.CopyFrom(now())
    return result


def with_warnings(scenario: scenario_pb2.Scenario, service: Service, warnings: Sequence[str]) -> None:
    """The scenario's warnings with `service`'s replaced by `warnings` (each kept as "<service>: …")."""
    prefix = f"{service.label}: "
    kept = [w for w in scenario.warnings if not w.startswith(prefix)]
    del scenario.warnings[:]
    scenario.warnings.extend([*kept, *(prefix + w for w in warnings)])


def refreshed(
    scenario: scenario_pb2.Scenario, service: Service, seen: Status, status: Status
) -> scenario_pb2.Scenario:
    """A status read from the service (`seen` when it was asked) is kept unless an action changed it since."""
    if status_of(scenario, service) != seen:
        return scenario
    return with_status(scenario, service, status)


# --- a service's status from what it says ------------------------------------------------------


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
        parts.append(short(progress.failure))
    if progress.error:
        parts.append(f"{progress.error} VMs in ERROR")
    if progress.errors:
        parts.append("first errors: " + "; ".join(short(e, 160) for e in progress.errors[:3]))
    if not parts and progress.done != progress.total:
        parts.append(f"{progress.done} of {progress.total} VMs done")
    return ", ".join(parts)


def short(text: str, most: int = 300) -> str:
    """A message kept short enough for a reply (a whole line of a remote error can run to pages)."""
    line = " ".join(text.split())
    return line if len(line) <= most else line[: most - 1] + "…"


def network_status() -> Status:
    """The network service answers when the network is there (it deploys while it is asked): READY."""
    return scenario_pb2.READY


def gone_is_none(status: Status) -> bool:
    """A service that no longer has a part it was asked to delete (NOT_FOUND) has deleted it: NONE."""
    return status in (scenario_pb2.DELETING, scenario_pb2.NONE)


# --- a service's status through an action ------------------------------------------------------


def transition(action: Action) -> Status:
    """The status a service takes while `action` (DEPLOY, UPDATE or DELETE) runs."""
    return _TRANSITIONS[action]


def after_action(action: Action, status: Status) -> Status:
    """The status once the service answered `action`: what its reply says, NONE after a DELETE."""
    return scenario_pb2.NONE if action == scenario_pb2.DELETE else status


def after_compute(action: Action, progress: compute_pb2.ComputeProgress | None) -> Status:
    """Compute's status from its reply; a reply without progress (a DELETE of a config compute does not
    have) means nothing is left, and otherwise the action is still under way."""
    if progress is not None:
        return compute_status(progress)
    return after_action(action, transition(action))


def after_failure(action: Action, previous: Status, code: grpc.StatusCode) -> Status:
    """The status once the service's call failed: FAILED, but an UPDATE turned down changes nothing."""
    return previous if action == scenario_pb2.UPDATE and code in _REJECTED else scenario_pb2.FAILED


# --- which action may run now ------------------------------------------------------------------


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


def topology_not_ready(
    action: Action, service: Service, status: Status, nodes: Sequence[common_pb2.InternalComputeInfo]
) -> FailedPrecondition:
    """Why `service` cannot be deployed or updated on a topology that is not READY (`status`)."""
    ready = sum(1 for n in nodes if n.status == common_pb2.READY)
    return _blocked(
        action,
        service,
        f"topology is {status_name(status)} ({ready} of {len(nodes)} vhosts READY); "
        "wait until CHECK topology says READY",
    )


def check_has_vms(scenario: scenario_pb2.Scenario) -> None:
    """Results are of VMs: FailedPrecondition unless compute was deployed."""
    if status_of(scenario, COMPUTE) == scenario_pb2.NONE:
        raise FailedPrecondition(
            f"scenario {scenario.id!r} has no VMs deployed ({describe_statuses(scenario)}); "
            "DEPLOY compute first"
        )


def check_testable(compute: Status) -> None:
    """The connectivity test needs compute READY; FailedPrecondition saying what to do otherwise."""
    if compute == scenario_pb2.READY:
        return
    hint = {
        scenario_pb2.NONE: "DEPLOY compute first",
        scenario_pb2.DEPLOYING: "wait until CHECK compute says READY",
        scenario_pb2.DELETING: "its VMs are being deleted",
    }.get(compute, "DELETE compute and DEPLOY it again")
    raise FailedPrecondition(f"cannot run the test: compute is {status_name(compute)}; {hint}")
