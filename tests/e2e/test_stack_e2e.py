"""The whole emulator end to end: a real local stack (processes), driven by teste2e over gRPC."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from merak import netns, teste2e
from merak.localstack import LocalStack, StackSettings
from merak.naming import topology_short_id
from merak.testing import free_port

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack() -> Iterator[StackSettings]:
    """A stack of its own: a short state directory and ports shifted away from a user's stack."""
    state = Path(tempfile.mkdtemp(prefix="mke", dir="/tmp"))
    settings = StackSettings(
        state_dir=state,
        port_offset=12000 + (os.getpid() % 400) * 10,
        redis_port=free_port(),
        temporal_port=free_port(),
        temporal_ui_port=free_port(),
    )
    local = LocalStack(settings, out=lambda _line: None)
    try:
        local.up()
        yield settings
    finally:
        local.down()
        shutil.rmtree(state, ignore_errors=True)


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


def leftovers(settings: StackSettings, report: teste2e.Report) -> dict[str, list[str]]:
    """Namespaces of the run's topology, agent processes of the stack, Redis keys of the services."""
    short = topology_short_id(report.ids["topology"])
    agents = subprocess.run(
        ["pgrep", "-af", f"{settings.state_dir}/run/topologies"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        keys = [str(k) for k in client.keys("merak:*")]
    finally:
        client.close()
    return {
        "namespaces": netns.list_names(f"mk-{short}-"),
        "agents": [line for line in agents if "services.agent" in line],
        "redis keys": keys,
    }


async def test_merak_teste2e_default_scenario(stack: StackSettings) -> None:
    report = await run_teste2e(stack)
    assert report.ok, report.errors
    assert report.vms_done == 50
    assert report.test["pairs_tried"] == 2450 and report.test["passed"] == 2450
    assert report.test["cross_host_pairs"] == 2000
    assert leftovers(stack, report) == {"namespaces": [], "agents": [], "redis keys": []}


async def test_two_vpcs_two_subnets_isolated(stack: StackSettings) -> None:
    report = await run_teste2e(stack, "--hosts", "4", "--vms-per-host", "8", "--vpcs", "2", "--subnets", "2")
    assert report.ok, report.errors
    assert report.vms_done == 32
    test = report.test
    assert test.get("failed", 0) == 0
    assert test["isolation_pairs_tried"] > 0 and test["isolation_held"] == test["isolation_pairs_tried"]
    assert test.get("isolation_violated", 0) == 0
    assert leftovers(stack, report) == {"namespaces": [], "agents": [], "redis keys": []}


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
    assert leftovers(stack, report) == {"namespaces": [], "agents": [], "redis keys": []}
