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
