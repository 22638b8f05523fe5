"""`merak labs`: list, show and destroy the labs of a stack (scenarios and bare topologies), through the
command line against the real services (fake data plane: no kernel objects, so it runs in seconds)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import pytest

from merak.v1 import common_pb2, scenario_pb2, topology_pb2, topology_pb2_grpc
from merak_tools import cli
from tests.integration.scenario_lab import (
    Stack,
    act,
    compute_config,
    create_scenario,
    leftovers,
    topology_config,
    watch,
)
from tests.support import assert_eventually, free_port, unique_name

TOPOLOGY, NETWORK, COMPUTE = scenario_pb2.TOPOLOGY, scenario_pb2.NETWORK, scenario_pb2.COMPUTE
DEPLOY = scenario_pb2.DEPLOY
NOTHING_LEFT: dict[str, list[str]] = {"namespaces": [], "agents": [], "redis": []}


class Merak:
    """Runs `merak labs …` as a person does, in a process of its own, against the test's stack; returns
    its exit code and what it printed (stdout, then stderr)."""

    def __init__(self, stack: Stack) -> None:
        addresses = stack.services.addresses
        self.flags = [
            "--scenario-address", addresses["scenario"],
            "--topology-address", addresses["topology"],
            "--compute-address", addresses["compute"],
        ]  # fmt: skip

    async def __call__(self, *argv: str, flags: list[str] | None = None) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "merak_tools.cli", "labs", *argv, *(self.flags if flags is None else flags),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), timeout=300)
        assert process.returncode is not None
        return process.returncode, out.decode() + err.decode()

    async def json(self, *argv: str) -> Any:
        code, out = await self(*argv, "--json")
        assert code == 0, out
        return json.loads(out)


@pytest.fixture
def merak(stack: Stack) -> Merak:
    return Merak(stack)


def _row(out: str, lab_id: str) -> list[str]:
    """The cells of a lab's row of the `merak labs` table (no cell holds a space in these tests)."""
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [lab_id]]
    assert len(rows) == 1, out
    return rows[0]


async def _running(stack: Stack) -> dict[str, str]:
    """Topology id → status, as the topology service lists them."""
    async with grpc.aio.insecure_channel(stack.services.addresses["topology"]) as channel:
        stub = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        reply = await stub.ListTopologies(topology_pb2.ListTopologiesRequest())
    return {t.topology_id: t.status for t in reply.topologies}


async def _bare_topology(stack: Stack, vhosts: int, cidr: str) -> str:
    """A topology made on the topology service directly (no scenario), READY; its id."""
    topology_id = unique_name("bare-")
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=topology_id, name="by-hand", topology_type=topology_pb2.TREE, number_of_vhosts=vhosts,
        vhost_per_rack=vhosts, ports_per_vswitch=vhosts + 1, data_plane_cidr=cidr, dataplane="fake",
    )  # fmt: skip
    async with grpc.aio.insecure_channel(stack.services.addresses["topology"]) as channel:
        stub = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        await stub.TopologyHandler(
            topology_pb2.InternalTopologyInfo(operation_type=common_pb2.CREATE, config=config)
        )

    async def ready() -> bool:
        return (await _running(stack)).get(topology_id) == "READY"

    made: bool = await assert_eventually(ready, timeout=30, message=f"topology {topology_id} READY")
    assert made
    return topology_id


async def _scenario_exists(stack: Stack, scenario_id: str) -> bool:
    try:
        await stack.stub.GetScenario(scenario_pb2.GetRequest(id=scenario_id))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc.details()
        return False
    return True


@pytest.mark.slow
async def test_a_deployed_scenario_is_listed_shown_and_destroyed(stack: Stack, merak: Merak) -> None:
    created = await create_scenario(
        stack.stub,
        topology=topology_config(vhosts=3, racks=1, per_rack=3, cidr="10.230.0.0/24", dataplane="fake"),
        compute=compute_config(nodes=3, vms_per_vpc=6),
    )
    sid, tid = created.scenario.id, created.topology.id
    await act(stack.stub, sid, TOPOLOGY, DEPLOY)
    await watch(stack, sid)
    await act(stack.stub, sid, NETWORK, DEPLOY)
    await act(stack.stub, sid, COMPUTE, DEPLOY)
    assert (await watch(stack, sid))[-1].status == scenario_pb2.READY

    [lab] = await merak.json()
    assert (lab["kind"], lab["id"], lab["name"], lab["topology_id"]) == (
        "scenario",
        sid,
        "scenario-test-1",
        tid,
    )
    statuses = [lab[k] for k in ("status", "topology_status", "network_status", "compute_status", "running")]
    assert statuses == ["READY"] * 5
    assert (lab["vhosts"], lab["planned_vhosts"], lab["vms"]["total"], lab["vms"]["done"]) == (3, 3, 6, 6)
    assert (lab["plugin"], lab["backend"], lab["dataplane"]) == ("native", "local", "fake")
    assert lab["configs"] == {
        "topology": tid,
        "network": created.network.id,
        "compute": created.compute.id,
        "service": created.service.id,
        "test": created.test.id,
    }
    code, out = await merak()
    assert code == 0, out
    assert _row(out, sid) == [sid, "scenario-test-1", *["READY"] * 5, "3", "6", "native", "local/fake"]
    assert "1 scenario, 0 topologies without a scenario" in out

    # By id, by its (unique) name, by its topology's id: the same lab, with its hosts.
    detail = await merak.json("show", sid)
    assert await merak.json("show", "scenario-test-1") == detail
    assert await merak.json("show", tid) == detail
    assert detail["lab"] == lab
    hosts = detail["hosts"]
    assert [h["name"] for h in hosts] == ["vhost-0", "vhost-1", "vhost-2"]
    assert [h["datapath_ip"] for h in hosts] == ["10.230.0.1/24", "10.230.0.2/24", "10.230.0.3/24"]
    assert {h["status"] for h in hosts} == {"READY"}
    assert all(h["agent_endpoint"].startswith("unix://") for h in hosts), hosts
    assert detail["endpoints"]["scenario"] == stack.services.addresses["scenario"]
    assert detail["exec_hints"] == ["nothing to exec into: the dataplane is fake (no namespaces)"]
    code, out = await merak("show", sid)
    assert code == 0, out
    assert "3 of 3 READY (3 planned)" in out and "6 of 6 done (CREATE)" in out
    assert hosts[2]["agent_endpoint"] in out

    code, out = await merak("destroy", "scenario-test-1")
    assert code == 0, out
    assert f"destroyed scenario {sid} (scenario-test-1): its VMs, network and topology {tid}" in out
    assert not await _scenario_exists(stack, sid)
    assert tid not in await _running(stack)
    assert await leftovers(stack, tid) == NOTHING_LEFT
    # Without --configs the configs stay, for the next scenario.
    kept = await stack.stub.GetTopologyConfig(scenario_pb2.GetRequest(id=tid))
    assert kept.id == tid
    assert await merak.json() == []
    code, out = await merak()
    assert (code, out.strip().startswith("no labs: no scenario in")) == (0, True), out

    code, out = await merak("destroy", sid)
    assert code == 2
    assert f"error: no lab '{sid}': it is no scenario id, scenario name or running topology id" in out


@pytest.mark.slow
async def test_bare_topologies_and_destroy_all_with_configs(stack: Stack, merak: Merak) -> None:
    first_bare = await _bare_topology(stack, 2, "10.231.0.0/24")
    second_bare = await _bare_topology(stack, 4, "10.232.0.0/24")
    deployed = await create_scenario(
        stack.stub,
        topology=topology_config(vhosts=2, racks=1, per_rack=2, cidr="10.233.0.0/24", dataplane="fake"),
    )
    await act(stack.stub, deployed.scenario.id, TOPOLOGY, DEPLOY)
    await watch(stack, deployed.scenario.id)
    # A second scenario, never deployed, shares all but the topology config of the first.
    own_topology = await stack.stub.CreateTopologyConfig(
        topology_config(vhosts=7, cidr="10.234.0.0/24", dataplane="fake")
    )
    sharing = await stack.stub.CreateScenario(
        scenario_pb2.Scenario(
            name="sharing",
            topology_id=own_topology.id,
            network_config_id=deployed.network.id,
            compute_config_id=deployed.compute.id,
            service_config_id=deployed.service.id,
            test_config_id=deployed.test.id,
        )
    )

    labs = {lab["id"]: lab for lab in await merak.json()}
    assert set(labs) == {deployed.scenario.id, sharing.id, first_bare, second_bare}
    bare = labs[first_bare]
    assert (bare["kind"], bare["name"], bare["topology_id"], bare["running"]) == (
        "topology", "by-hand", first_bare, "READY",
    )  # fmt: skip
    assert (bare["status"], bare["vhosts"], bare["vms"], bare["dataplane"]) == ("", 2, None, "fake")
    assert labs[second_bare]["vhosts"] == 4
    assert (labs[deployed.scenario.id]["status"], labs[deployed.scenario.id]["running"]) == ("DONE", "READY")
    assert (labs[sharing.id]["status"], labs[sharing.id]["running"], labs[sharing.id]["vhosts"]) == (
        "NONE", "", 0,
    )  # fmt: skip
    code, out = await merak()
    assert code == 0, out
    assert _row(out, first_bare) == [
        first_bare, "by-hand", "no", "scenario", "-", "-", "-", "READY", "2", "-", "-", "local/fake",
    ]  # fmt: skip
    assert _row(out, sharing.id)[:9] == [sharing.id, "sharing", *["NONE"] * 4, "-", "-", "(7"]
    assert "2 scenarios, 2 topologies without a scenario" in out

    shown = await merak.json("show", first_bare)
    assert (shown["lab"]["kind"], [h["name"] for h in shown["hosts"]]) == ("topology", ["vhost-0", "vhost-1"])
    code, out = await merak("destroy", first_bare)
    assert (code, out.strip()) == (0, f"destroyed topology {first_bare} (by-hand)")
    assert first_bare not in await _running(stack)

    # The deployed scenario, with --configs: its own topology config goes, the shared ones stay.
    code, out = await merak("destroy", deployed.scenario.id, "--configs")
    assert code == 0, out
    assert f"  deleted topology config {deployed.topology.id}" in out
    for kind, config_id in (("network", deployed.network.id), ("test", deployed.test.id)):
        assert f"  kept {kind} config {config_id} (used by scenario {sharing.id})" in out
    assert deployed.topology.id not in await _running(stack)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.GetTopologyConfig(scenario_pb2.GetRequest(id=deployed.topology.id))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    code, out = await merak("destroy", "--all", "--configs")
    assert code == 0, out
    assert f"destroyed scenario {sharing.id} (sharing)" in out
    assert f"destroyed topology {second_bare} (by-hand)" in out
    assert out.count("  deleted ") == 5 and "  kept " not in out
    assert await merak.json() == []
    assert await _running(stack) == {}
    page = scenario_pb2.ListRequest()
    assert list((await stack.stub.ListNetworkConfigs(page)).items) == []
    assert list((await stack.stub.ListTestConfigs(page)).items) == []
    code, out = await merak("destroy", "--all")
    assert (code, out.strip()) == (0, "no labs to destroy")


@pytest.mark.slow
async def test_names_that_are_not_one_lab_and_a_stack_that_is_down_fail_clearly(
    stack: Stack, merak: Merak
) -> None:
    first = await create_scenario(stack.stub)
    second = await create_scenario(stack.stub)  # the same name, "scenario-test-1"
    code, out = await merak("show", "scenario-test-1")
    assert code == 1
    ids = ", ".join(sorted([first.scenario.id, second.scenario.id]))
    assert f"error: 2 scenarios are named 'scenario-test-1' ({ids}); name one by its id" in out
    code, out = await merak("destroy", "no-such-lab")
    assert code == 2 and "error: no lab 'no-such-lab'" in out
    assert await _scenario_exists(stack, first.scenario.id)

    nobody = f"127.0.0.1:{free_port()}"
    code, out = await merak(flags=["--scenario-address", nobody])
    assert code == 1
    assert f"error: scenario service at {nobody}: UNAVAILABLE: " in out and "merak status" in out


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["show"], "show needs a lab"),
        (["destroy"], "destroy needs a lab or --all"),
        (["destroy", "x", "--all"], "destroy needs a lab or --all (not both)"),
        (["list", "--configs"], "--all and --configs go with destroy"),
        (["destroy", "x", "--json"], "--json goes with list and show"),
        (["list", "x"], "list takes no lab"),
    ],
)
def test_labs_command_lines_that_make_no_sense_are_refused(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["labs", *argv])
    assert caught.value.code == 2
    assert said in capsys.readouterr().err
