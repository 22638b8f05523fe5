"""The ovn plugin's VM ports against a real OVN northbound database: AllocatePorts makes logical switch
ports (addresses, port security, security groups) and ReleasePorts removes them, read back with
ovn-nbctl; WaitPortsUp times each port from its insert to `up` (written by hand, as northd would, or by
northd itself once a chassis binds the port in SB)."""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from merak import ovs
from merak.v1 import common_pb2, network_pb2
from merak_tools.ovncentral import RunningCentral
from services.agent.ovn.chassis import Chassis, ChassisSpec
from services.network.plugins.ovn import names
from tests.integration.ovn_net import (
    allocate,
    as_list,
    by_name,
    config,
    failure,
    ident,
    op,
    port,
    rows,
    serve,
)
from tests.support.plugin import ServeBuilt


def _members(central: RunningCentral, group: str) -> set[str]:
    """The names of a port group's ports."""
    uuids = set(as_list(by_name(rows(central, "Port_Group"))[group]["ports"]))
    return {str(row["name"]) for row in rows(central, "Logical_Switch_Port") if row["_uuid"] in uuids}


def _wait_up(netconfig_id: str, vm_ids: list[str], timeout: float) -> network_pb2.WaitPortsUpRequest:
    return network_pb2.WaitPortsUpRequest(netconfig_id=netconfig_id, vm_ids=vm_ids, timeout_seconds=timeout)


async def test_ports_made_kept_and_released(
    serve_built: ServeBuilt, redis_url: str, ovn_nb: RunningCentral
) -> None:
    net = await serve(serve_built, redis_url, ovn=ovn_nb)
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, config("nc-p", nb=ovn_nb.nb)))
    reply = await net.stub.AllocatePorts(
        allocate(
            "nc-p",
            port("vm-a", 0, 0, "sg-web"),
            port("vm-b", 0, 1, "sg-web", "sg-db"),
            port("vm-c", 1, 0),
            port("vm-d", 1, 1, "sg-db"),
        )
    )
    router_ports = by_name(rows(ovn_nb, "Logical_Router_Port", "nc-p"))
    lsps = by_name(rows(ovn_nb, "Logical_Switch_Port", "nc-p"))
    switches = by_name(rows(ovn_nb, "Logical_Switch", "nc-p"))
    for allocation, (v, s) in zip(reply.ports, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
        subnet = f"sn-{v}-{s}"
        assert allocation.port_name == names.vm_port("nc-p", allocation.vm_id)
        assert allocation.gateway_mac == router_ports[names.router_port("nc-p", subnet)]["mac"]
        assert (allocation.vni, allocation.gateway, allocation.cidr) == (
            0,
            f"10.{10 + v}.{s}.1",
            f"10.{10 + v}.{s}.0/24",
        )
        row = lsps[allocation.port_name]
        address = f"{allocation.mac} {allocation.ip}"
        assert as_list(row["addresses"]) == [address] and as_list(row["port_security"]) == [address]
        owner = {"merak-netconfig": "nc-p", "merak-vpc": f"vpc-{v}", "merak-subnet": subnet}
        assert row["external_ids"] == {**owner, "merak-vm": allocation.vm_id}
        assert row["_uuid"] in as_list(switches[names.switch("nc-p", subnet)]["ports"])
    port_of = {p.vm_id: p.port_name for p in reply.ports}
    web, db, drop = (
        names.port_group("nc-p", "sg-web"),
        names.port_group("nc-p", "sg-db"),
        names.drop_group("nc-p"),
    )
    assert _members(ovn_nb, web) == {port_of["vm-a"], port_of["vm-b"]}
    assert _members(ovn_nb, db) == {port_of["vm-b"], port_of["vm-d"]}
    assert _members(ovn_nb, drop) == {port_of["vm-a"], port_of["vm-b"], port_of["vm-d"]}

    # Asked again (a retried batch): the same address and row; the groups become the ones asked for.
    again = await net.stub.AllocatePorts(allocate("nc-p", port("vm-b", 0, 1, "sg-db"), port("vm-a", 0, 0)))
    assert [(p.ip, p.mac) for p in again.ports] == [
        (reply.ports[1].ip, reply.ports[1].mac),
        (reply.ports[0].ip, reply.ports[0].mac),
    ]
    assert (
        by_name(rows(ovn_nb, "Logical_Switch_Port", "nc-p"))[port_of["vm-b"]]["_uuid"]
        == lsps[port_of["vm-b"]]["_uuid"]
    )
    assert _members(ovn_nb, web) == set()
    assert _members(ovn_nb, drop) == {port_of["vm-b"], port_of["vm-d"]}

    # An unknown group is refused before anything is made.
    code, details = await failure(
        net.stub.AllocatePorts(allocate("nc-p", port("vm-e", 0, 0), port("vm-f", 0, 0, "sg-web", "sg-nope")))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ports[1].security_group_ids[1]" in details
    info = await net.stub.NetConfigHandler(op(common_pb2.INFO, ident("nc-p")))
    assert [s.allocated for v in info.vpcs for s in v.subnets] == [1, 1, 1, 1]
    assert len(rows(ovn_nb, "Logical_Switch_Port", "nc-p")) == 4 + 4

    released = await net.stub.ReleasePorts(
        network_pb2.ReleasePortsRequest(netconfig_id="nc-p", vm_ids=["vm-d", "vm-x"])
    )
    assert released.released == 1
    assert port_of["vm-d"] not in by_name(rows(ovn_nb, "Logical_Switch_Port", "nc-p"))
    assert _members(ovn_nb, db) == {port_of["vm-b"]}
    sample = net.registry.get_sample_value
    assert sample("merak_network_ovn_ports_total", {"operation": "made"}) == 4
    assert sample("merak_network_ovn_ports_total", {"operation": "removed"}) == 1

    # A hundred ports in one call (one transaction).
    many = [port(f"many-{i}", i % 2, i // 2 % 2, "sg-web") for i in range(100)]
    made = await net.stub.AllocatePorts(allocate("nc-p", *many))
    assert len({p.ip for p in made.ports}) == 100 and len(_members(ovn_nb, web)) == 100


async def test_wait_ports_up(serve_built: ServeBuilt, redis_url: str, ovn_nb: RunningCentral) -> None:
    net = await serve(serve_built, redis_url, ovn=ovn_nb)
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, config("nc-w", 1, 1, nb=ovn_nb.nb)))
    reply = await net.stub.AllocatePorts(allocate("nc-w", *(port(f"vm-{i}", 0, 0) for i in range(3))))
    port_of = {p.vm_id: p.port_name for p in reply.ports}

    started = time.monotonic()
    timed_out = await net.stub.WaitPortsUp(_wait_up("nc-w", ["vm-0", "vm-1", "vm-nope"], 0.3))
    assert time.monotonic() - started >= 0.3
    assert [(p.vm_id, p.up, p.seconds) for p in timed_out.ports] == [
        ("vm-0", False, 0), ("vm-1", False, 0), ("vm-nope", False, 0)
    ]  # fmt: skip

    # `up` written as northd writes it, while WaitPortsUp waits.
    waiting = asyncio.ensure_future(net.stub.WaitPortsUp(_wait_up("nc-w", ["vm-0", "vm-1", "vm-0"], 20)))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    for vm_id in ("vm-0", "vm-1"):
        ovn_nb.nbctl("set", "Logical_Switch_Port", port_of[vm_id], "up=true")
    started = time.monotonic()
    answered = await waiting
    assert time.monotonic() - started < 5  # answered once both are up, not at the deadline
    assert [(p.vm_id, p.up, p.chassis) for p in answered.ports] == [("vm-0", True, ""), ("vm-1", True, "")]
    assert all(0.5 < p.seconds < 10 for p in answered.ports)  # inserted before the 0.3 s and 0.2 s waits
    histogram = net.registry.get_sample_value("merak_network_ovn_port_up_seconds_count")
    assert histogram == 2

    # Already up when asked.
    ovn_nb.nbctl("set", "Logical_Switch_Port", port_of["vm-2"], "up=true")
    await asyncio.sleep(0.1)
    (vm2,) = (await net.stub.WaitPortsUp(_wait_up("nc-w", ["vm-2"], 5))).ports
    assert vm2.up and vm2.seconds > 0

    # A restarted network service did not insert these ports: up, with no latency to tell.
    restarted = await serve(serve_built, redis_url, ovn=ovn_nb)
    again = await restarted.stub.WaitPortsUp(_wait_up("nc-w", ["vm-0", "vm-2"], 5))
    assert [(p.up, p.seconds) for p in again.ports] == [(True, 0), (True, 0)]

    for timeout in (-1, 600.5, math.nan, math.inf):
        code, details = await failure(net.stub.WaitPortsUp(_wait_up("nc-w", ["vm-0"], timeout)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "timeout_seconds" in details
    code, details = await failure(net.stub.WaitPortsUp(_wait_up("nc-w", [""], 1)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "vm_ids[0]" in details
    code, _ = await failure(net.stub.WaitPortsUp(_wait_up("nc-none", ["vm-0"], 1)))
    assert code == grpc.StatusCode.NOT_FOUND
    native = config("nc-native", 1, 1, groups=False)
    native.plugin = "native"
    await net.stub.NetConfigHandler(op(common_pb2.CREATE, native))
    code, details = await failure(net.stub.WaitPortsUp(_wait_up("nc-native", ["vm-0"], 1)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "ovn" in details


def _sbctl(central: RunningCentral, *args: str) -> str:
    done = subprocess.run(
        [ovs.program("ovn-sbctl"), f"--db={central.sb}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


async def test_a_port_bound_by_a_chassis_is_up_with_its_chassis(
    serve_built: ServeBuilt, redis_url: str, ovn_central: RunningCentral
) -> None:
    net = await serve(serve_built, redis_url, ovn=ovn_central)
    cfg = config("nc-c", 1, 1, nb=ovn_central.nb, sb=ovn_central.sb)
    created = await net.stub.NetConfigHandler(op(common_pb2.CREATE, cfg))
    assert created.ovn_sb == ovn_central.sb
    (allocation,) = (await net.stub.AllocatePorts(allocate("nc-c", port("vm-0", 0, 0, "sg-web")))).ports
    ovn_central.nbctl("--wait=sb", "sync")  # northd has made the port's binding in SB
    _sbctl(ovn_central, "chassis-add", "chassis-1", "geneve", "127.0.0.1")
    waiting = asyncio.ensure_future(net.stub.WaitPortsUp(_wait_up("nc-c", ["vm-0"], 20)))
    await asyncio.sleep(0.1)
    _sbctl(ovn_central, "lsp-bind", allocation.port_name, "chassis-1")  # what ovn-controller does
    (answer,) = (await waiting).ports
    assert (answer.vm_id, answer.up, answer.chassis) == ("vm-0", True, "chassis-1")
    assert 0.1 < answer.seconds < 20


@pytest.mark.root
async def test_ports_bound_by_a_real_dummy_chassis(
    serve_built: ServeBuilt, redis_url: str, ovn_central: RunningCentral
) -> None:
    """The whole path the compute side takes, minus VMs: ports made here, plugged into a chassis's br-int
    (ovn-controller on OVS's dummy datapath binds them), up in NB as northd writes it."""
    net = await serve(serve_built, redis_url, ovn=ovn_central)
    await net.stub.NetConfigHandler(
        op(common_pb2.CREATE, config("nc-r", 1, 2, nb=ovn_central.nb, sb=ovn_central.sb))
    )
    root = Path(tempfile.mkdtemp(prefix="mk-ch-", dir="/tmp"))
    chassis = Chassis(ChassisSpec("merak-test-chassis", "", root, "127.99.0.7", "", 0, True))
    try:
        await asyncio.to_thread(chassis.ensure, ovn_central.sb)
        vm_ids = [f"vm-{i}" for i in range(20)]
        reply = await net.stub.AllocatePorts(
            allocate("nc-r", *(port(v, 0, i % 2, "sg-web") for i, v in enumerate(vm_ids)))
        )
        waiting = asyncio.ensure_future(net.stub.WaitPortsUp(_wait_up("nc-r", vm_ids, 60)))
        await asyncio.to_thread(
            chassis.add_ports, [(f"tp{i}", p.port_name) for i, p in enumerate(reply.ports)]
        )
        answers = (await waiting).ports
        assert [(p.vm_id, p.up, p.chassis) for p in answers] == [
            (v, True, "merak-test-chassis") for v in vm_ids
        ]
        assert all(0 < p.seconds < 60 for p in answers)
        histogram = net.registry.get_sample_value("merak_network_ovn_port_up_seconds_count")
        assert histogram == 20
    finally:
        await asyncio.to_thread(chassis.stop)
        shutil.rmtree(root, ignore_errors=True)
