"""A test config's fault schedule: checks, occurrences, and what the lab suffers at each moment."""

from __future__ import annotations

import pytest

from merak.errors import InvalidArgument
from merak.faultspec import parse_scheduled_fault
from merak.v1 import scenario_pb2, topology_pb2
from services.scenario import faults

LinkFault, HostFault = topology_pb2.LinkFault, topology_pb2.HostFault


def link(node: str, **settings: object) -> scenario_pb2.ScheduledFault:
    return scenario_pb2.ScheduledFault(link=LinkFault(node=node, **settings))  # type: ignore[arg-type]


def scheduled(fault: scenario_pb2.ScheduledFault, **when: object) -> scenario_pb2.ScheduledFault:
    result = scenario_pb2.ScheduledFault(**when)  # type: ignore[arg-type]
    result.MergeFrom(fault)
    return result


@pytest.mark.parametrize(
    ("fault", "field"),
    [
        (scenario_pb2.ScheduledFault(at_seconds=1), "fault_schedule[0].fault"),
        (link("vhost-1"), "fault_schedule[0].link"),
        (link("", down=True), "fault_schedule[0].link.node"),
        (scheduled(link("vhost-1", down=True), at_seconds=-1), "fault_schedule[0].at_seconds"),
        (scheduled(link("vhost-1", down=True), at_seconds=float("nan")), "fault_schedule[0].at_seconds"),
        (scheduled(link("vhost-1", down=True), duration_seconds=1e9), "fault_schedule[0].duration_seconds"),
        (scheduled(link("vhost-1", down=True), repeat=2), "fault_schedule[0].repeat"),
        (
            scheduled(link("vhost-1", down=True), duration_seconds=2, repeat=2, every_seconds=2),
            "fault_schedule[0].every_seconds",
        ),
        (
            scheduled(link("vhost-1", down=True), duration_seconds=1, repeat=5000, every_seconds=2),
            "fault_schedule[0].repeat",
        ),
        (scenario_pb2.ScheduledFault(host=HostFault(vhost="vhost-0")), "fault_schedule[0].host.state"),
        (scheduled(link("vhost-1", down=True), name="a\nb"), "fault_schedule[0].name"),
    ],
)
def test_a_bad_fault_is_refused_naming_its_field(fault: scenario_pb2.ScheduledFault, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        faults.check([fault])
    assert caught.value.field == field


def test_two_faults_cannot_share_a_name_and_the_total_is_bounded() -> None:
    one = scheduled(link("vhost-1", down=True), name="x")
    with pytest.raises(InvalidArgument, match="names two faults"):
        faults.check([one, one])
    many = scheduled(link("vhost-1", down=True), duration_seconds=1, repeat=1000, every_seconds=2)
    with pytest.raises(InvalidArgument, match="occurrences in all"):
        faults.check([scheduled(many, name=str(i)) for i in range(10)])


def test_a_flap_repeats_and_the_lab_follows_every_start_and_end() -> None:
    flap = scheduled(
        link("vhost-2", down=True), name="flap", at_seconds=1, duration_seconds=2, repeat=2, every_seconds=5
    )
    loss = scheduled(link("vhost-1", loss_percent=5), at_seconds=0, duration_seconds=4)
    held = scenario_pb2.ScheduledFault(
        host=HostFault(vhost="vhost-0", state=topology_pb2.HOST_FROZEN), at_seconds=3
    )
    schedule = [flap, loss, held]
    faults.check(schedule)
    occurrences = faults.expand(schedule)
    assert [(o.name, o.start, o.end) for o in occurrences] == [
        ("fault-1", 0, 4),
        ("flap", 1, 3),
        ("fault-2", 3, None),
        ("flap", 6, 8),
        ("flap", 11, 13),
    ]
    assert faults.moments(occurrences) == [0, 1, 3, 4, 6, 8, 11, 13]
    assert [o.key for o in faults.active(occurrences, 3)] == ["1.0", "2.0"]
    assert [o.key for o in faults.active(occurrences, 13)] == ["2.0"]  # held to the end


def test_the_lab_keeps_its_own_faults_and_a_link_named_twice_suffers_the_worst() -> None:
    base = topology_pb2.FaultsReply(
        links=[LinkFault(node="vhost-1", rate_bps=50_000_000)],
        partitions=[topology_pb2.Partition(side_a=["vhost-0"], side_b=["vhost-3"])],
        hosts=[HostFault(vhost="vhost-0", state=topology_pb2.HOST_FROZEN)],
    )
    schedule = [
        link("vhost-1", loss_percent=5, rate_bps=10_000_000),
        link("vhost-1", loss_percent=20),
        scenario_pb2.ScheduledFault(host=HostFault(vhost="vhost-0", state=topology_pb2.HOST_CRASHED)),
        scenario_pb2.ScheduledFault(partition=topology_pb2.Partition(side_a=["vhost-1"], side_b=["vhost-2"])),
    ]
    request = faults.lab_faults("t1", base, faults.expand(schedule))
    assert request.topology_id == "t1"
    assert list(request.links) == [LinkFault(node="vhost-1", rate_bps=10_000_000, loss_percent=20)]
    assert list(request.hosts) == [HostFault(vhost="vhost-0", state=topology_pb2.HOST_CRASHED)]
    assert [list(p.side_a) for p in request.partitions] == [["vhost-0"], ["vhost-1"]]
    assert faults.lab_faults("t1", base, []).links[0].rate_bps == 50_000_000


def test_an_error_about_the_one_fault_request_names_the_schedule_field() -> None:
    said = faults.schedule_field(
        3, "link", "links[0].node: 'x' is not a node", "test config t: fault_schedule"
    )
    assert said == "test config t: fault_schedule[3].link.node: 'x' is not a node"
    assert (
        faults.describe(link("vhost-1", nic="eth1", down=True, loss_percent=5))
        == "link vhost-1/eth1: down, loss 5%"
    )


def test_process_faults_are_checked_merged_and_described() -> None:
    frozen = parse_scheduled_fault("at=1 for=2 freeze=ovn-northd")
    assert frozen.process == topology_pb2.ProcessFault(process="ovn-northd", state=topology_pb2.HOST_FROZEN)
    crashed = parse_scheduled_fault("at=1 crash=ovn-controller@vhost-1")
    assert crashed.process.vhost == "vhost-1" and crashed.process.state == topology_pb2.HOST_CRASHED
    assert parse_scheduled_fault("crash=vhost-1").WhichOneof("fault") == "host"  # a vhost, as before
    faults.check([frozen, crashed])
    assert faults.describe(crashed) == "process ovn-controller@vhost-1: crashed"
    # The same process frozen by the lab and crashed by the schedule: the crash wins.
    base = topology_pb2.FaultsReply(
        processes=[topology_pb2.ProcessFault(process="ovn-northd", state=topology_pb2.HOST_FROZEN)]
    )
    worst = parse_scheduled_fault("at=1 for=1 crash=ovn-northd")
    merged = faults.lab_faults("t", base, faults.expand([worst, crashed]))
    assert {(p.process, p.vhost, p.state) for p in merged.processes} == {
        ("ovn-northd", "", topology_pb2.HOST_CRASHED),
        ("ovn-controller", "vhost-1", topology_pb2.HOST_CRASHED),
    }
    for text, field in (("freeze=ovn-controller@", "fault_schedule[0].process.vhost"),):
        with pytest.raises(InvalidArgument) as caught:
            faults.check([parse_scheduled_fault(text)])
        assert caught.value.field == field
    running = scenario_pb2.ScheduledFault(process=topology_pb2.ProcessFault(process="ovn-sb"))
    with pytest.raises(InvalidArgument) as caught:
        faults.check([running])
    assert caught.value.field == "fault_schedule[0].process.state"
