"""OVN as the control plane under test, end to end: the stack's own OVN central, every emulated host a real
chassis, teste2e --plugin ovn with the real data plane; VMs are ready only once their ports are up in NB,
every pair pings through OVN's datapath, and a teardown leaves nothing in NB, SB or on the machine."""

from __future__ import annotations

import subprocess

import pytest

from merak import ovs
from merak_tools.localstack import StackSettings
from tests.e2e.lab import leftovers
from tests.e2e.test_stack_e2e import run_teste2e
from tests.support.ovn import skip_without_ovn

pytestmark = [pytest.mark.root, pytest.mark.slow]


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
    # Teardown: nothing of the run in NB or SB, no chassis process, no namespace.
    assert (
        _ctl("ovn-nbctl", central.remote("nb"), "--bare", "--columns=name", "list", "Logical_Switch_Port")
        == ""
    )
    assert _ctl("ovn-nbctl", central.remote("nb"), "--bare", "--columns=name", "list", "Logical_Router") == ""
    assert _ctl("ovn-sbctl", central.remote("sb"), "--bare", "--columns=name", "list", "Chassis") == ""
    assert leftovers(stack, [report.ids["topology"]]) == {
        "namespaces": [],
        "agents": [],
        "chassis": [],
        "redis keys": [],
    }
