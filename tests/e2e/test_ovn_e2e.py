"""OVN as the control plane under test, end to end: the stack's own OVN central, every emulated host a real
chassis, teste2e --plugin ovn with the real data plane; VMs are ready only once their ports are up in NB,
every pair pings through OVN's datapath, and a teardown leaves nothing in NB, SB or on the machine."""

from __future__ import annotations

import ipaddress
import subprocess

import grpc
import pytest

from merak import ovs
from merak.v1 import scenario_pb2, scenario_pb2_grpc
from merak_tools.localstack import StackSettings
from tests.e2e.lab import leftovers, vm_namespaces
from tests.e2e.test_stack_e2e import run_teste2e
from tests.integration.agent.test_ovn_chassis import tcp_carries_data
from tests.support.ovn import skip_without_ovn

pytestmark = [pytest.mark.root, pytest.mark.slow]
NOTHING_LEFT: dict[str, list[str]] = {"namespaces": [], "agents": [], "chassis": [], "redis keys": []}


def _ctl(program: str, remote: str, *args: str) -> str:
    return subprocess.run(
        [ovs.program(program), f"--db={remote}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


async def test_teste2e_ovn_real_data_plane(stack: StackSettings) -> None:
    skip_without_ovn()
    central = ovs.Central(stack.state_dir / "ovn")
    report = await run_teste2e(stack, "--plugin", "ovn", "--hosts", "3", "--vms-per-host", "4")
    assert report.ok, report.errors
    assert report.vms_done == 12
    test = report.test
    assert test["pairs_tried"] == 12 * 11 and test["passed"] == test["pairs_tried"], test
    assert test["cross_host_pairs"] == 12 * 8
    operations = {op["operation"]: op for op in report.results.get("operations", [])}
    # Every VM was made ready by OVN: its port came up in NB, each timed from its insert.
    assert operations["port_up"]["requests"] == 12, operations
    assert operations["port_up"].get("errors", 0) == 0
    assert operations["chassis_start"]["requests"] == 3
    # The control plane's processes over the run, sampled by the topology service.
    groups = {g["group"]: g for g in report.results["processes"]}
    assert {"northd", "nb", "sb", "ovn-controller", "ovs-vswitchd"} <= set(groups), sorted(groups)
    assert max(s.get("processes", 0) for s in groups["ovn-controller"]["samples"]) == 3
    assert max(s.get("rss_mib", 0) for s in groups["northd"]["samples"]) > 1
    # Every host's chassis listed in the southbound database during the run.
    assert max(c.get("registered", 0) for c in report.results["chassis"]) == 3
    assert max(c.get("chassis", 0) for c in report.results["chassis"]) == 3
    # Teardown: nothing of the run in NB or SB, no chassis process, no namespace.
    assert (
        _ctl("ovn-nbctl", central.remote("nb"), "--bare", "--columns=name", "list", "Logical_Switch_Port")
        == ""
    )
    assert _ctl("ovn-nbctl", central.remote("nb"), "--bare", "--columns=name", "list", "Logical_Router") == ""
    assert _ctl("ovn-sbctl", central.remote("sb"), "--bare", "--columns=name", "list", "Chassis") == ""
    assert leftovers(stack, [report.ids["topology"]]) == NOTHING_LEFT


def _vms(topology_id: str) -> list[tuple[int, str, ipaddress.IPv4Interface, str]]:
    """(vhost index, namespace, address, VPC id) of every VM of the lab, read from the kernel."""
    found = []
    for ns in vm_namespaces(topology_id):
        out = subprocess.run(
            ["ip", "-n", ns, "-o", "-d", "link", "show", "eth0"], capture_output=True, text=True, check=True
        ).stdout
        alias = out.split(" alias ", 1)[1].split()[0] if " alias " in out else ""
        addr = subprocess.run(
            ["ip", "-n", ns, "-o", "-4", "addr", "show", "eth0"], capture_output=True, text=True, check=True
        ).stdout.split()[3]
        found.append((int(ns.split("-")[2]), ns, ipaddress.IPv4Interface(addr), alias))
    return found


async def test_ovn_two_vpcs_router_isolation_and_tcp_across_hosts(stack: StackSettings) -> None:
    skip_without_ovn()
    report = await run_teste2e(
        stack,
        "--plugin",
        "ovn",
        "--hosts",
        "4",
        "--vms-per-host",
        "8",
        "--vpcs",
        "2",
        "--subnets",
        "2",
        "--keep",
    )
    scenario_id = report.ids.get("scenario", "")
    try:
        assert report.ok, report.errors
        assert report.vms_done == 32
        test = report.test
        assert test.get("failed", 0) == 0 and test["passed"] == test["pairs_tried"]
        # Two VPCs: OVN keeps them apart (the same addresses may even repeat in both).
        assert test["isolation_pairs_tried"] > 0 and test["isolation_held"] == test["isolation_pairs_tried"]
        vms = _vms(report.ids["topology"])
        assert len(vms) == 32
        # Two VMs of one VPC on different hosts and in different subnets: through the logical router.
        a = vms[0]
        b = next(v for v in vms if v[0] != a[0] and v[3] == a[3] and v[2].network != a[2].network)
        tcp_carries_data(b[1], str(b[2].ip), a[1])
    finally:
        if scenario_id:
            async with grpc.aio.insecure_channel(f"localhost:{stack.grpc_port('scenario')}") as channel:
                stub = scenario_pb2_grpc.MerakScenarioServiceStub(channel)
                await stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=scenario_id, teardown=True))
                for kind in ("topology", "network", "service", "compute", "test"):
                    method = getattr(stub, f"Delete{kind.capitalize()}Config")
                    await method(scenario_pb2.DeleteRequest(id=report.ids[kind]))
    assert leftovers(stack, [report.ids["topology"]]) == NOTHING_LEFT


async def test_ovn_with_northd_frozen_during_the_deploy(stack: StackSettings) -> None:
    skip_without_ovn()
    # northd frozen for the deploy's first 4 s: ports inserted meanwhile go up only once it thaws.
    report = await run_teste2e(
        stack,
        "--plugin",
        "ovn",
        "--hosts",
        "2",
        "--vms-per-host",
        "4",
        "--fault",
        "at=0 for=4 freeze=ovn-northd",
    )
    assert report.ok, report.errors
    assert report.vms_done == 8
    results = report.results
    [window] = results["faults"]
    assert window["description"] == "process ovn-northd: frozen" and window["ended"], window
    port_up = {op["operation"]: op for op in results["operations"]}["port_up"]
    assert port_up["requests"] == 8 and port_up.get("errors", 0) == 0
    # The first ports waited for northd: their latency holds the rest of the freeze.
    assert port_up["latency"]["max_ms"] >= 1000, port_up
    assert leftovers(stack, [report.ids["topology"]])["chassis"] == []
