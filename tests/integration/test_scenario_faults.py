"""A scenario with a fault schedule on a real lab: applied while compute creates the VMs, each start and
end streamed by WatchScenario and kept in the results, the lab's own faults kept underneath, nothing
left after teardown."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import field_mask_pb2

from merak import protojson
from merak.v1 import scenario_pb2, topology_pb2, topology_pb2_grpc
from merak_tools import report_html
from tests.integration.scenario_lab import (
    Stack,
    act,
    compute_config,
    create_scenario,
    leftovers,
    pingall_config,
    topology_config,
    watch,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

TOPOLOGY, NETWORK, COMPUTE = scenario_pb2.TOPOLOGY, scenario_pb2.NETWORK, scenario_pb2.COMPUTE
DEPLOY, DELETE = scenario_pb2.DEPLOY, scenario_pb2.DELETE
LinkFault, HostFault, Partition = topology_pb2.LinkFault, topology_pb2.HostFault, topology_pb2.Partition


def schedule() -> list[scenario_pb2.ScheduledFault]:
    """Loss, a flapping link, a partition and a crashed host during the deploy; a rate limit held."""
    fault = scenario_pb2.ScheduledFault
    return [
        fault(name="loss", at_seconds=0, duration_seconds=3, link=LinkFault(node="vhost-1", loss_percent=30)),
        fault(
            name="flap",
            at_seconds=0.5,
            duration_seconds=1,
            repeat=2,
            every_seconds=2,
            link=LinkFault(node="vhost-2", down=True),
        ),
        fault(
            name="split",
            at_seconds=1,
            duration_seconds=2,
            partition=Partition(side_a=["vhost-0"], side_b=["vhost-1"]),
        ),
        fault(
            name="crash",
            at_seconds=1.5,
            duration_seconds=2,
            host=HostFault(vhost="vhost-0", state=topology_pb2.HOST_CRASHED),
        ),
        fault(name="slow", at_seconds=0, link=LinkFault(node="vhost-2", rate_bps=10_000_000)),
    ]


async def test_a_fault_schedule_runs_during_the_deploy_and_is_reported(stack: Stack) -> None:
    # A schedule that cannot be right is refused when stored, naming the field.
    bad = pingall_config()
    bad.fault_schedule.add(
        duration_seconds=2, repeat=3, every_seconds=1, link=LinkFault(node="vhost-0", down=True)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stack.stub.CreateTestConfig(bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("fault_schedule[0].every_seconds: ")

    # One the lab cannot suffer (no such node) is refused by DEPLOY compute before any VM is made.
    test = pingall_config()
    test.fault_schedule.add(at_seconds=1, duration_seconds=1, link=LinkFault(node="nope", down=True))
    created = await create_scenario(
        stack.stub,
        topology=topology_config(vhosts=3, racks=1, per_rack=3),
        compute=compute_config(nodes=3, vms_per_vpc=30),
        test=test,
    )
    sid = created.scenario.id
    await act(stack.stub, sid, TOPOLOGY, DEPLOY)
    assert (await watch(stack, sid))[-1].topology_status == scenario_pb2.READY
    await act(stack.stub, sid, NETWORK, DEPLOY)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await act(stack.stub, sid, COMPUTE, DEPLOY)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(
        f"test config {created.test.id}: fault_schedule[0].link.node: 'nope' is not a node"
    )
    scenario = await stack.stub.GetScenario(scenario_pb2.GetRequest(id=sid))
    assert scenario.compute_status == scenario_pb2.NONE
    assert await stack.redis.keys("merak:compute:*") == []

    test.ClearField("fault_schedule")
    test.fault_schedule.extend(schedule())
    test.id = created.test.id
    await stack.stub.UpdateTestConfig(
        scenario_pb2.UpdateTestConfigRequest(
            config=test, update_mask=field_mask_pb2.FieldMask(paths=["fault_schedule"])
        )
    )

    async with grpc.aio.insecure_channel(stack.services.addresses["topology"]) as channel:
        topology = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        lab_own = LinkFault(node="vhost-1", rate_bps=50_000_000)
        await topology.SetFaults(
            topology_pb2.SetFaultsRequest(topology_id=created.topology.id, links=[lab_own])
        )

        await act(stack.stub, sid, COMPUTE, DEPLOY)
        progress = await watch(stack, sid)
        assert progress[-1].compute_status == scenario_pb2.READY, progress[-1]

        # Every start and every end was streamed; the held one started and lasts.
        events = [(p.fault.name, p.fault.occurrence, p.fault.ended) for p in progress if p.HasField("fault")]
        expected_ends = {("loss", 0), ("flap", 0), ("flap", 1), ("flap", 2), ("split", 0), ("crash", 0)}
        assert {(n, o) for n, o, ended in events if ended} == expected_ends, events
        assert ("slow", 0, False) in events and ("slow", 0, True) not in events
        messages = [p.message for p in progress if p.HasField("fault")]
        assert any(m.startswith("fault 'crash' started at ") for m in messages), messages

        # After the schedule: the lab's own fault and the held one, nothing else.
        now = await topology.ListFaults(topology_pb2.ListFaultsRequest(topology_id=created.topology.id))
        assert sorted((lf.node, lf.rate_bps, lf.down, lf.loss_percent) for lf in now.links) == [
            ("vhost-1", 50_000_000, False, 0.0),
            ("vhost-2", 10_000_000, False, 0.0),
        ]
        assert not now.partitions and not now.hosts

        # The faults healed: every pair pings.
        report = await stack.stub.RunTest(scenario_pb2.RunTestRequest(scenario_id=sid), timeout=180)
        assert report.pairs_tried == 870 and report.failed == 0, list(report.failures)[:5]

        # The results hold each window, on the operation's clock.
        results = await stack.stub.GetResults(scenario_pb2.GetResultsRequest(scenario_id=sid))
        assert results.HasField("started_at") and results.vms_ready == 30
        windows = {(w.name, w.occurrence): w for w in results.faults}
        assert set(windows) == expected_ends | {("slow", 0)}
        for (name, _occurrence), window in windows.items():
            assert not window.error, window
            if name == "slow":
                assert not window.ended and window.start_second >= 0
                continue
            assert window.ended and 0 <= window.start_second < window.end_second, window
        # The starts and ends came in the schedule's order. How close to the schedule's seconds they
        # came depends on how fast the lab applies a change (a busy machine is late): not checked.
        scheduled = {
            ("loss", 0): (0, 3), ("flap", 0): (0.5, 1.5), ("flap", 1): (2.5, 3.5), ("flap", 2): (4.5, 5.5),
            ("split", 0): (1, 3), ("crash", 0): (1.5, 3.5),
        }  # fmt: skip
        moments = [(0.0, windows[("slow", 0)].start_second)]
        for key, (start, end) in scheduled.items():
            moments += [(start, windows[key].start_second), (end, windows[key].end_second)]
        stamps = [stamp for _, stamp in sorted(moments)]
        assert stamps == sorted(stamps), sorted(moments)
        assert windows[("crash", 0)].description == "host vhost-0: crashed"

        # The report shows each window, in its table and shaded on every time plot.
        document = protojson.to_dict(results)
        page = report_html.render({"results": document, "ok": True})
        for name in ("loss", "flap", "split", "crash", "slow"):
            assert f"<td>{name}</td>" in page
        timeline = report_html.timeline_figure(document)
        assert timeline is not None and len(timeline.data) >= 4  # the faults' lane and three series
        shaded = [shape for shape in timeline.layout.shapes if shape.type == "rect"]
        assert len(shaded) == 7 * len(timeline.data)

        # DELETE compute ends the held fault: the lab keeps only its own.
        await act(stack.stub, sid, COMPUTE, DELETE)
        assert (await watch(stack, sid))[-1].compute_status == scenario_pb2.NONE
        now = await topology.ListFaults(topology_pb2.ListFaultsRequest(topology_id=created.topology.id))
        assert list(now.links) == [lab_own] and not now.hosts
        raw = await stack.redis.get(f"merak:scenario:faults:{sid}")
        assert raw is not None
        record = json.loads(raw)
        assert not record["running"] and all(w["end"] is not None for w in record["windows"].values())

    await stack.stub.DeleteScenario(scenario_pb2.DeleteScenarioRequest(id=sid, teardown=True), timeout=120)
    assert await leftovers(stack, created.topology.id) == {"namespaces": [], "agents": [], "redis": []}
    assert await stack.redis.keys("merak:scenario:faults:*") == []
