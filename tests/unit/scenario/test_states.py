"""The scenario state machine: Merak's ordering rules, the blocking service named, statuses from replies."""

from __future__ import annotations

import grpc
import pytest

from merak.errors import FailedPrecondition
from merak.v1 import common_pb2, compute_pb2, scenario_pb2
from services.scenario.models import COMPUTE, NETWORK, TOPOLOGY, Action, Service, Status
from services.scenario.states import (
    after_compute,
    after_failure,
    check_action,
    check_testable,
    compute_status,
    overall,
    refreshed,
    topology_status,
    transition,
    with_warnings,
)

N, DEP, R, DEL, F = (
    scenario_pb2.NONE,
    scenario_pb2.DEPLOYING,
    scenario_pb2.READY,
    scenario_pb2.DELETING,
    scenario_pb2.FAILED,
)
DEPLOY, CHECK, DELETE, UPDATE = (
    scenario_pb2.DEPLOY,
    scenario_pb2.CHECK,
    scenario_pb2.DELETE,
    scenario_pb2.UPDATE,
)


def scenario(topology: Status = N, network: Status = N, compute: Status = N) -> scenario_pb2.Scenario:
    return scenario_pb2.Scenario(
        id="s", topology_status=topology, network_status=network, compute_status=compute
    )


ALLOWED = [
    (scenario(), TOPOLOGY, DEPLOY),
    (scenario(F), TOPOLOGY, DEPLOY),
    (scenario(R), NETWORK, DEPLOY),
    (scenario(R, R), COMPUTE, DEPLOY),
    (scenario(R, R, F), COMPUTE, DEPLOY),
    (scenario(R, R, R), COMPUTE, DELETE),
    (scenario(R, R, DEP), COMPUTE, DELETE),
    (scenario(R, R), NETWORK, DELETE),
    (scenario(R), TOPOLOGY, DELETE),
    (scenario(DEP), TOPOLOGY, DELETE),
    (scenario(F), TOPOLOGY, DELETE),
    (scenario(R), TOPOLOGY, UPDATE),
    (scenario(R, R, R), TOPOLOGY, UPDATE),  # a running lab changes under what runs on it
    (scenario(R, R, R), COMPUTE, UPDATE),
    (scenario(R, R, R), TOPOLOGY, CHECK),
    (scenario(R, R, DEL), COMPUTE, CHECK),
]


@pytest.mark.parametrize(("state", "service", "action"), ALLOWED)
def test_allowed(state: scenario_pb2.Scenario, service: Service, action: Action) -> None:
    check_action(state, service, action)


REFUSED = [
    (scenario(), COMPUTE, DEPLOY, "cannot DEPLOY compute: topology is NONE; DEPLOY topology first"),
    (scenario(), NETWORK, DEPLOY, "cannot DEPLOY network: topology is NONE; DEPLOY topology first"),
    (scenario(R), COMPUTE, DEPLOY, "cannot DEPLOY compute: network is NONE; DEPLOY network first"),
    (
        scenario(DEP),
        NETWORK,
        DEPLOY,
        "cannot DEPLOY network: topology is DEPLOYING; wait until CHECK topology",
    ),
    (scenario(R), TOPOLOGY, DEPLOY, "cannot DEPLOY topology: topology is READY; it is deployed already"),
    (scenario(R, R, R), TOPOLOGY, DELETE, "cannot DELETE topology: compute is READY; DELETE compute first"),
    (scenario(R, R), TOPOLOGY, DELETE, "cannot DELETE topology: network is READY; DELETE network first"),
    (
        scenario(R, R, DEL),
        NETWORK,
        DELETE,
        "cannot DELETE network: compute is DELETING; wait until its DELETE",
    ),
    (scenario(), TOPOLOGY, DELETE, "cannot DELETE topology: topology is not deployed (NONE)"),
    (scenario(), COMPUTE, CHECK, "cannot CHECK compute: compute is not deployed (NONE)"),
    (scenario(DEP), TOPOLOGY, UPDATE, "cannot UPDATE topology: topology is DEPLOYING"),
    (
        scenario(R, R, DEP),
        TOPOLOGY,
        UPDATE,
        "cannot UPDATE topology: compute is DEPLOYING; wait until it is over",
    ),
    (scenario(F, R), TOPOLOGY, DEPLOY, "cannot DEPLOY topology: network is READY; DELETE network first"),
]


@pytest.mark.parametrize(("state", "service", "action", "message"), REFUSED)
def test_refused_names_the_blocking_service(
    state: scenario_pb2.Scenario, service: Service, action: Action, message: str
) -> None:
    with pytest.raises(FailedPrecondition) as caught:
        check_action(state, service, action)
    assert caught.value.message.startswith(message), caught.value.message


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ((N, N, N), N),
        ((R, R, R), R),
        ((R, N, N), scenario_pb2.DONE),
        ((R, R, DEP), DEP),
        ((R, R, DEL), DEL),
        ((R, F, DEP), F),
    ],
)
def test_overall_status(statuses: tuple[Status, Status, Status], expected: Status) -> None:
    assert overall(statuses) == expected


def test_topology_status_from_vhosts() -> None:
    def nodes(*statuses: common_pb2.Status.ValueType) -> list[common_pb2.InternalComputeInfo]:
        return [common_pb2.InternalComputeInfo(status=s) for s in statuses]

    assert topology_status(nodes(common_pb2.READY, common_pb2.READY)) == R
    assert topology_status(nodes(common_pb2.READY, common_pb2.DEPLOYING)) == DEP
    assert topology_status(nodes(common_pb2.READY, common_pb2.ERROR)) == F
    assert topology_status([]) == DEP


@pytest.mark.parametrize(
    ("progress", "expected"),
    [
        (compute_pb2.ComputeProgress(operation="CREATE", total=50, done=10), DEP),
        (compute_pb2.ComputeProgress(operation="CREATE", total=50, done=50, finished=True), R),
        (compute_pb2.ComputeProgress(operation="CREATE", total=50, done=49, error=1, finished=True), F),
        (compute_pb2.ComputeProgress(operation="CREATE", total=50, done=0, finished=True, failure="x"), F),
        (compute_pb2.ComputeProgress(operation="DELETE", total=50, deleting=20), DEL),
        (compute_pb2.ComputeProgress(operation="DELETE", finished=True), N),
        (compute_pb2.ComputeProgress(operation="DELETE", total=50, error=2, finished=True), F),
    ],
)
def test_compute_status_from_progress(progress: compute_pb2.ComputeProgress, expected: Status) -> None:
    assert compute_status(progress) == expected


def test_status_through_an_action() -> None:
    assert [transition(a) for a in (DEPLOY, UPDATE, DELETE)] == [DEP, scenario_pb2.UPDATING, DEL]
    # Compute's reply without progress: nothing left after a DELETE, else still under way.
    assert [after_compute(a, None) for a in (DEPLOY, UPDATE, DELETE)] == [DEP, scenario_pb2.UPDATING, N]
    done = compute_pb2.ComputeProgress(operation="CREATE", total=2, done=2, finished=True)
    assert after_compute(DEPLOY, done) == R
    # A call that failed is FAILED, but an UPDATE the service turned down leaves the service as it was.
    assert after_failure(UPDATE, R, grpc.StatusCode.INVALID_ARGUMENT) == R
    assert after_failure(UPDATE, R, grpc.StatusCode.UNAVAILABLE) == F
    assert after_failure(DEPLOY, N, grpc.StatusCode.INVALID_ARGUMENT) == F


def test_a_refresh_keeps_what_an_action_wrote_since() -> None:
    moved = refreshed(scenario(DEP), TOPOLOGY, DEP, R)
    assert (moved.topology_status, moved.status) == (R, scenario_pb2.DONE)
    stored = scenario(R)
    assert refreshed(stored, TOPOLOGY, DEP, F) is stored


def test_warnings_are_replaced_per_service() -> None:
    state = scenario_pb2.Scenario(warnings=["topology: a", "compute: b"])
    with_warnings(state, COMPUTE, ["c", "d"])
    assert list(state.warnings) == ["topology: a", "compute: c", "compute: d"]
    with_warnings(state, TOPOLOGY, [])
    assert list(state.warnings) == ["compute: c", "compute: d"]


@pytest.mark.parametrize(
    ("compute", "hint"),
    [
        (N, "compute is NONE; DEPLOY compute first"),
        (DEP, "compute is DEPLOYING; wait until CHECK compute says READY"),
        (DEL, "compute is DELETING; its VMs are being deleted"),
        (F, "compute is FAILED; DELETE compute and DEPLOY it again"),
    ],
)
def test_the_connectivity_test_needs_compute_ready(compute: Status, hint: str) -> None:
    check_testable(R)
    with pytest.raises(FailedPrecondition) as caught:
        check_testable(compute)
    assert caught.value.message == f"cannot run the test: {hint}"
