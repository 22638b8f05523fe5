"""Merak's own clients against a real local stack, unchanged, as chains through every DEPLOY action.

Merak's teste2e REST flow (its bodies, placeholders included) with the native plugin and with the alcor
plugin against the Alcor stand-in on Alcor's NodePorts; Merak's two Postman collections run by newman,
chained, as they are and again followed by the deployment. Every step must answer 2xx with Merak's OK
envelope; then the VMs must be in the kernel and ping across hosts, and the DELETE actions must leave
nothing behind.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from merak.v1 import scenario_pb2, scenario_pb2_grpc
from merak_tools.alcor_standin import ALCOR_NODEPORTS, ALCOR_SERVICES, FakeAlcor
from merak_tools.localstack import StackSettings
from tests.e2e.lab import leftovers, vm_namespaces
from tests.e2e.merak_teste2e import MerakTeste2e
from tests.e2e.postman import COLLECTION_FILES, COLLECTIONS_ENV, Chain, collections_dir
from tests.support import assert_eventually

pytestmark = [pytest.mark.root, pytest.mark.slow]

NEWMAN = Path(__file__).parent / "newman" / "node_modules" / ".bin" / "newman"
NOTHING_LEFT: dict[str, list[str]] = {"namespaces": [], "agents": [], "chassis": [], "redis keys": []}
# Alcor's NodePorts on a loopback address of their own, so that they cannot meet a user's listener.
ALCOR_HOST = "127.0.0.93"


def scenario_stub(
    settings: StackSettings,
) -> tuple[grpc.aio.Channel, scenario_pb2_grpc.MerakScenarioServiceAsyncStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port('scenario')}")
    return channel, scenario_pb2_grpc.MerakScenarioServiceStub(channel)


async def check_lab(settings: StackSettings, scenario_id: str) -> scenario_pb2.Scenario:
    """The deployed scenario's VMs are namespaces in the kernel and every same-VPC pair pings."""
    channel, stub = scenario_stub(settings)
    async with channel:
        # Merak's teste2e stops at "50 out of 50 done!"; compute says READY once its operation has ended.
        async def settled() -> bool:
            found = await stub.GetScenario(scenario_pb2.GetRequest(id=scenario_id), timeout=30)
            return found.status != scenario_pb2.DEPLOYING

        settle: bool = await assert_eventually(settled, timeout=120, interval=0.5, message="still DEPLOYING")
        assert settle
        scenario = await stub.GetScenario(scenario_pb2.GetRequest(id=scenario_id), timeout=30)
        assert scenario_pb2.ServiceStatus.Name(scenario.status) == "READY", scenario
        report = await stub.RunTest(
            scenario_pb2.RunTestRequest(scenario_id=scenario_id, max_pairs=2000), timeout=600
        )
    assert report.vms > 0 and len(vm_namespaces(scenario.topology_id)) == report.vms
    assert report.pairs_tried > 0 and report.passed == report.pairs_tried, report.failures[:5]
    assert report.cross_host_pairs > 0
    return scenario


async def test_merak_teste2e_rest_flow_native(stack: StackSettings) -> None:
    client = MerakTeste2e(f"http://127.0.0.1:{stack.rest_port}")
    await client.deploy()
    scenario = await check_lab(stack, client.ids["scenario"])
    # Merak's placeholders were left out, each named in the scenario's warnings.
    warnings = "\n".join(scenario.warnings)
    for field in (
        "config.network.routers[0].subnets[0]",
        "config.network.security_groups[0].rules[0]",
        "config.network.vpcs[0].vpc_id",
        "config.vnodes",
    ):
        assert field in warnings, warnings
    await client.delete()
    assert leftovers(stack, [client.ids["topology"]]) == NOTHING_LEFT
    assert all(200 <= step.status_code < 300 for step in client.steps)


@pytest.fixture
def alcor() -> Iterator[FakeAlcor]:
    fake = FakeAlcor(ALCOR_SERVICES, host=ALCOR_HOST, ports=ALCOR_NODEPORTS)
    try:
        yield fake
    finally:
        fake.stop()


async def test_merak_teste2e_rest_flow_alcor(stack: StackSettings, alcor: FakeAlcor) -> None:
    """Merak's own service config: the alcorIp entry names Alcor's host, aca-cmd's `-a` the agents'."""
    client = MerakTeste2e(f"http://127.0.0.1:{stack.rest_port}", alcor_host=ALCOR_HOST)
    await client.deploy()
    await check_lab(stack, client.ids["scenario"])
    bound = {r.path for r in alcor.state.requests if r.method == "PUT" and "/ports/" in r.path}
    assert len(alcor.state.ports) == len(bound) == 50
    await client.delete()
    assert leftovers(stack, [client.ids["topology"]]) == NOTHING_LEFT
    assert alcor.state.ports == {} and alcor.state.objects() == 0


def newman(collection: dict[str, Any], environment: Path, exported: Path, workdir: Path) -> None:
    """Run a collection; any failed request or test fails here with newman's report."""
    path = workdir / f"{collection['info']['name']}.json"
    path.write_text(json.dumps(collection))
    run = subprocess.run(
        [str(NEWMAN), "run", str(path), "-e", str(environment), "--export-environment", str(exported),
         "--reporters", "cli", "--color", "off", "--disable-unicode", "--bail"],
        capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]


@pytest.mark.parametrize("deploy", [False, True], ids=["as-is", "deployed"])
@pytest.mark.parametrize("name", COLLECTION_FILES)
async def test_postman_collection_chained(
    stack: StackSettings, tmp_path: Path, name: str, deploy: bool
) -> None:
    found = collections_dir()
    if found is None:
        pytest.skip(
            f"Merak's Postman collections are not on this machine (shared/merak/, or ${COLLECTIONS_ENV})"
        )
    assert NEWMAN.exists(), "newman is missing: `make install` installs it (npm)"
    chain = Chain(json.loads((found / name).read_text()))
    environment = tmp_path / "env.json"
    base = {"key": "baseUrl", "value": f"http://127.0.0.1:{stack.rest_port}", "enabled": True}
    environment.write_text(json.dumps({"name": "merak", "values": [base]}))
    made = tmp_path / "made.json"
    try:
        newman(chain.chained(deploy=deploy), environment, made, tmp_path)
        ids = {v["key"]: v["value"] for v in json.loads(made.read_text())["values"]}
        if deploy:
            await check_lab(stack, ids["scenario_id"])
    finally:
        # The way back runs whatever the chain reached (a DELETE of what is not deployed succeeds).
        newman(
            chain.teardown_collection(),
            made if made.exists() else environment,
            tmp_path / "gone.json",
            tmp_path,
        )
    assert leftovers(stack, [ids["topology_id"]]) == NOTHING_LEFT
