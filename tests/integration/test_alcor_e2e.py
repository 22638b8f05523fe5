"""Alcor end to end through the scenario: teste2e --plugin alcor against an Alcor-compatible server.

The Alcor endpoint travels from the scenario's service config (the alcorIp entry) to the network
service, and to compute and the agents (the port manager), per scenario; no process setting is used.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from merak_tools import teste2e
from merak_tools.alcor_standin import FakeAlcor
from tests.stack import ServiceStack

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def alcor() -> Iterator[FakeAlcor]:
    fake = FakeAlcor()  # one port for every Alcor service, as behind Alcor's API gateway
    try:
        yield fake
    finally:
        fake.stop()


async def test_teste2e_with_alcor_creates_pings_and_removes_everything(
    temporal_services: ServiceStack, alcor: FakeAlcor
) -> None:
    services = temporal_services
    services.control_plane_allow = alcor.allow_entries  # what the operator lists for their Alcor
    await services.everything(teardown_timeout=60, watch_interval=0.2, test_retry=5)
    opts = teste2e.parse(
        [
            "--plugin", "alcor", "--alcor-ip", alcor.url,
            "--scenario-address", services.addresses["scenario"],
            "--topology-address", services.addresses["topology"],
            "--report", str(services.run_dir / "report.json"),
            "--html", str(services.run_dir / "report.html"),
        ]
    )  # fmt: skip
    report = await teste2e.main_async(opts)
    assert report.ok, report.errors
    # The control plane's results: every Alcor port call the agents made, timed, by operation.
    results = report.results
    assert (results["plugin"], results["vms"], results["vms_ready"]) == ("alcor", 50, 50)
    operations = {op["operation"]: op for op in results["operations"]}
    assert operations["create_port"]["requests"] >= 50 and operations["create_port"]["codes"]["201"] == 50
    assert operations["bind_port"]["requests"] >= 50 and operations["bind_port"]["codes"]["200"] == 50
    assert (
        0 < operations["create_port"]["latency"]["p50_ms"] <= operations["create_port"]["latency"]["max_ms"]
    )
    assert results["time_to_ready"]["count"] == 50 and results["ready_per_second"]
    # The data plane came from Alcor's goal states (compute's own push is off with alcor): the stand-in
    # pushed each bound port to its host's goal-state server, and its neighbours to the others; every
    # port's time from its POST until its host applied the goal state is in the results.
    # The network service's own Alcor calls are in the scenario's results too, beside the ports'.
    for operation, code in (("register_nodes", "200"), ("create_vpc", "201"), ("create_subnet", "201")):
        assert operations[operation]["plugin"] == "alcor" and operations[operation]["codes"][code] >= 1
    ready = operations["data_plane_ready"]
    assert results["overlay_source"] == "alcor goal states"
    assert ready["codes"] == {"OK": 50} and 0 < ready["latency"]["p50_ms"] <= ready["latency"]["max_ms"]
    ready_count = services.registry("compute").get_sample_value(
        "merak_compute_data_plane_ready_seconds_count", {"plugin": "alcor"}
    )
    assert ready_count == 50  # and on the workers' /metrics
    pushes = alcor.state.pushes
    assert pushes and all(p.outcome == "ok" for p in pushes), [p.outcome for p in pushes][:5]
    assert {p.host for p in pushes} == {f"vhost-{i}" for i in range(5)}
    assert (report.vms, report.vms_done) == (50, 50)
    assert report.test["pairs_tried"] == 2450 and report.test["passed"] == 2450
    seen = alcor.state.requests
    created = {r.body["port"]["id"] for r in seen if r.method == "POST" and r.path.endswith("/ports")}
    bound = [r for r in seen if r.method == "PUT" and "/ports/" in r.path]
    removed = {r.path for r in seen if r.method == "DELETE" and "/ports/" in r.path}
    # Every VM got its port from Alcor (PRECREATE), was bound to its host (CREATE), and went (DELETE);
    # a retried call (the fake may drop a connection) never makes a second port.
    assert (len(created), len({r.path for r in bound}), len(removed)) == (50, 50, 50)
    assert {r.body["port"]["binding:host_id"] for r in bound} == {f"vhost-{i}" for i in range(5)}
    assert alcor.state.ports == {} and alcor.state.objects() == 0
    # Every call into the control plane under test is timed, by service, operation and status code.
    network = services.registry("network")
    for service, operation, code in (("vpc", "create_vpc", "201"), ("subnet", "create_subnet", "201"),
                                     ("node", "register_nodes", "200")):  # fmt: skip
        labels = {"plugin": "alcor", "service": service, "operation": operation, "code": code}
        count = network.get_sample_value("merak_control_plane_request_seconds_count", labels)
        assert count is not None and count >= 1, (labels, count)


async def test_without_alcors_goal_states_no_vm_is_ready_and_no_packet_flows(
    temporal_services: ServiceStack, alcor: FakeAlcor
) -> None:
    """The packets of the test above flow because of goal states: with every push dropped, each VM's
    CREATE waits for its port's goal state in vain and the VM is in ERROR, saying so; no ping passes."""
    services = temporal_services
    services.control_plane_allow = alcor.allow_entries
    alcor.push_drop = 1.0
    await services.topology()
    await services.network()
    await services.compute()
    await services.worker(alcor_goalstate_timeout=3.0)
    await services.scenario(teardown_timeout=60, watch_interval=0.2, test_retry=1)
    opts = teste2e.parse(
        [
            "--plugin", "alcor", "--alcor-ip", alcor.url, "--hosts", "2", "--vms-per-host", "2",
            "--scenario-address", services.addresses["scenario"],
            "--topology-address", services.addresses["topology"],
            "--report", str(services.run_dir / "report.json"), "--timeout", "120",
            "--keep",  # the VMs' records say why (the stack deletes the lab at its end)
        ]
    )  # fmt: skip
    report = await teste2e.main_async(opts)
    assert not report.ok
    assert (report.vms, report.vms_done) == (4, 0)
    assert any("ERROR: 4" in error for error in report.errors), report.errors
    # Why, per VM (the compute store) and in the results: no goal state came for its port.
    results = report.results
    operations = {op["operation"]: op for op in results["operations"]}
    assert operations["data_plane_ready"]["codes"] == {"DEADLINE_EXCEEDED": 4}
    compute = services.built["compute"].root
    config_id = results["compute_config_id"]
    errors = [r.error for host in await compute.store.vms.hosts(config_id) for r in
              await compute.store.vms.records(config_id, host)]  # fmt: skip
    assert len(errors) == 4 and all("no goal state from Alcor for port" in e for e in errors), errors
    assert alcor.state.pushes and all(p.outcome == "dropped" for p in alcor.state.pushes)
    assert not report.test or report.test.get("passed", 0) == 0


async def test_an_alcor_that_cannot_reach_the_hosts_keeps_our_own_push_when_asked(
    temporal_services: ServiceStack, alcor: FakeAlcor
) -> None:
    """--alcor-own-overlay: Alcor pushes nothing (here: its southbound is off), our overlay push programs
    the hosts, the VMs do not wait for goal states, and the results say where the data plane came from."""
    services = temporal_services
    services.control_plane_allow = alcor.allow_entries
    alcor.pushing = False
    await services.everything(teardown_timeout=60, watch_interval=0.2, test_retry=5)
    opts = teste2e.parse(
        [
            "--plugin", "alcor", "--alcor-ip", alcor.url, "--alcor-own-overlay",
            "--hosts", "2", "--vms-per-host", "2",
            "--scenario-address", services.addresses["scenario"],
            "--topology-address", services.addresses["topology"],
            "--report", str(services.run_dir / "report.json"),
        ]
    )  # fmt: skip
    report = await teste2e.main_async(opts)
    assert report.ok, report.errors
    assert report.test["pairs_tried"] == 12 and report.test["passed"] == 12
    assert report.results["overlay_source"] == "merak push"
    operations = {op["operation"] for op in report.results["operations"]}
    assert "data_plane_ready" not in operations and alcor.state.pushes == []
