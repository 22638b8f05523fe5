"""The whole emulator end to end: a real local stack (processes), driven by teste2e over gRPC."""

from __future__ import annotations

import pytest

from merak_tools import teste2e
from merak_tools.localstack import StackSettings
from tests.e2e.lab import leftovers

pytestmark = [pytest.mark.root, pytest.mark.slow]


async def run_teste2e(settings: StackSettings, *extra: str) -> teste2e.Report:
    report_path = settings.state_dir / "report.json"
    opts = teste2e.parse(
        [
            "--scenario-address",
            f"localhost:{settings.grpc_port('scenario')}",
            "--topology-address",
            f"localhost:{settings.grpc_port('topology')}",
            "--report",
            str(report_path),
            *extra,
        ]
    )
    return await teste2e.main_async(opts)


async def test_merak_teste2e_default_scenario(stack: StackSettings) -> None:
    report = await run_teste2e(stack)
    assert report.ok, report.errors
    assert report.vms_done == 50
    assert report.test["pairs_tried"] == 2450 and report.test["passed"] == 2450
    assert report.test["cross_host_pairs"] == 2000
    assert leftovers(stack, [report.ids["topology"]]) == {
        "namespaces": [],
        "agents": [],
        "chassis": [],
        "redis keys": [],
    }


async def test_two_vpcs_two_subnets_isolated(stack: StackSettings) -> None:
    report = await run_teste2e(stack, "--hosts", "4", "--vms-per-host", "8", "--vpcs", "2", "--subnets", "2")
    assert report.ok, report.errors
    assert report.vms_done == 32
    test = report.test
    assert test.get("failed", 0) == 0
    assert test["isolation_pairs_tried"] > 0 and test["isolation_held"] == test["isolation_pairs_tried"]
    assert test.get("isolation_violated", 0) == 0
    assert leftovers(stack, [report.ids["topology"]]) == {
        "namespaces": [],
        "agents": [],
        "chassis": [],
        "redis keys": [],
    }


async def test_fake_thousand_hosts(stack: StackSettings) -> None:
    report = await run_teste2e(
        stack,
        "--hosts",
        "1000",
        "--vms-per-host",
        "10",
        "--dataplane",
        "fake",
        "--vhosts-per-rack",
        "40",
        "--ports-per-switch",
        "32",
        "--max-pairs",
        "2000",
    )
    assert report.ok, report.errors
    assert report.vms_done == 10_000
    assert report.test["dataplane"] == "fake"
    assert report.test["passed"] == report.test["pairs_tried"] > 0
    assert leftovers(stack, [report.ids["topology"]]) == {
        "namespaces": [],
        "agents": [],
        "chassis": [],
        "redis keys": [],
    }
