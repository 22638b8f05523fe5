"""What each device of a lab suffers for a SetFaultsRequest (pure; the kernel side is in integration)."""

from __future__ import annotations

import pytest

from merak.errors import InvalidArgument
from merak.v1 import topology_pb2
from services.topology import faults
from tests.unit.topology.test_generator import build, config


def test_a_rack_in_a_partition_stands_for_the_vhosts_under_it() -> None:
    # 6 vhosts, 3 per rack: rack-1 holds vhost-0..2, rack-2 vhost-3..5.
    lab = build(config(number_of_vhosts=6, number_of_racks=2, vhost_per_rack=3))
    request = topology_pb2.SetFaultsRequest(
        partitions=[topology_pb2.Partition(side_a=["rack-1"], side_b=["rack-2", "vhost-5"])]
    )
    plan = faults.plan(lab, request)
    blocked = {node: devices[lab.node(node).nics[0].name].blocked for node, devices in plan.items()}
    assert sorted(blocked) == [f"vhost-{i}" for i in range(6)]
    assert blocked["vhost-0"] == ("10.200.0.4", "10.200.0.5", "10.200.0.6")
    assert blocked["vhost-4"] == ("10.200.0.1", "10.200.0.2", "10.200.0.3")
    with pytest.raises(InvalidArgument, match="vhost or rack") as caught:
        faults.plan(
            lab,
            topology_pb2.SetFaultsRequest(
                partitions=[topology_pb2.Partition(side_a=["vs-1"], side_b=["rack-2"])]
            ),
        )
    assert caught.value.field == "partitions[0].side_a"
    with pytest.raises(InvalidArgument, match="both sides"):
        faults.plan(
            lab,
            topology_pb2.SetFaultsRequest(
                partitions=[topology_pb2.Partition(side_a=["rack-1"], side_b=["vhost-1"])]
            ),
        )


def test_process_faults_name_a_central_process_or_a_vhosts_ovn_controller() -> None:
    lab = build(config(number_of_vhosts=2, number_of_racks=1, vhost_per_rack=2))
    request = topology_pb2.SetFaultsRequest(
        processes=[
            topology_pb2.ProcessFault(process="ovn-northd", state=topology_pb2.HOST_FROZEN),
            topology_pb2.ProcessFault(
                process="ovn-controller", vhost="vhost-1", state=topology_pb2.HOST_CRASHED
            ),
            topology_pb2.ProcessFault(process="ovn-sb", state=topology_pb2.HOST_RUNNING),  # nothing held
        ]
    )
    assert faults.process_plan(lab, request) == {
        "ovn-northd": topology_pb2.HOST_FROZEN,
        "ovn-controller@vhost-1": topology_pb2.HOST_CRASHED,
    }
    bad = [
        (topology_pb2.ProcessFault(process="sshd"), "processes[0].process"),
        (topology_pb2.ProcessFault(process="ovn-nb", vhost="vhost-0"), "processes[0].vhost"),
        (topology_pb2.ProcessFault(process="ovn-controller", vhost="vhost-9"), "processes[0].vhost"),
        (topology_pb2.ProcessFault(process="ovn-controller"), "processes[0].vhost"),
    ]
    for fault, field in bad:
        with pytest.raises(InvalidArgument) as caught:
            faults.process_plan(lab, topology_pb2.SetFaultsRequest(processes=[fault]))
        assert caught.value.field == field
    twice = topology_pb2.ProcessFault(process="ovn-sb", state=topology_pb2.HOST_FROZEN)
    with pytest.raises(InvalidArgument, match="listed twice"):
        faults.process_plan(lab, topology_pb2.SetFaultsRequest(processes=[twice, twice]))
