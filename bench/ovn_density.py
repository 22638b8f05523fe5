"""ovn-heater's "20 nodes density light" shape (ovn-org/ovn-heater, test-scenarios/ocp-20-density-light.yml:
20 workers, 4,000 ports made at startup, then 1,000 more, each measured until it is up), on one box with
the dummy datapath: the emulator (teste2e keeps its lab, then a compute UPDATE through the scenario
service adds the ports) and the floor (bench/ovn_floor.py's direct script, a second round of ports on
the same chassis). ovn-heater measures the second phase's ports until they are reachable by ping from
their pod; with no data plane here, `up` in NB (bound by its chassis) is the end of a port's latency.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from google.protobuf import field_mask_pb2

from bench.ovn_floor import FloorResult, NbWatch
from bench.stack import teste2e_argv
from merak import ovs
from merak.grpcclient import open_channel
from merak.v1 import scenario_pb2, scenario_pb2_grpc
from merak_tools import teste2e
from merak_tools.localstack import StackSettings


def known_ports(watch: NbWatch, count: int, timeout: float = 120) -> set[str]:
    """The names of the VM ports NB holds once the watch has synced `count` of them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = watch.idl.tables["Logical_Switch_Port"].rows.values()
        names = {row.name for row in rows if row.type != "router"}
        if len(names) >= count or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


async def emulator_density(
    settings: StackSettings, hosts: int, per_host: int, more: int, subnets: int
) -> tuple[FloorResult, FloorResult, dict[str, Any]]:
    """teste2e (kept) with hosts x per_host ports, then `more` ports added by a compute UPDATE; both
    phases watched by NB IDLs. The lab is torn down before this returns."""
    nb = ovs.Central(settings.state_dir / "ovn").remote("nb")
    start_watch = NbWatch(nb)
    try:
        argv = [
            *teste2e_argv(settings, "report-density.json"),
            "--plugin", "ovn", "--dataplane", "fake", "--keep",
            "--hosts", str(hosts), "--vms-per-host", str(per_host), "--subnets", str(subnets),
            "--max-pairs", "1000",
        ]  # fmt: skip
        report = await teste2e.main_async(teste2e.parse(argv))
        start = start_watch.result(hosts * per_host)
    finally:
        start_watch.close()
    details: dict[str, Any] = {"ok": report.ok, "start_vms_done": report.vms_done}
    scenario_id = report.ids.get("scenario", "")
    if not scenario_id:
        return start, FloorResult(0, 0, 0, 0, 0, 0), {**details, "errors": report.errors[:3]}
    total = hosts * (per_host + more // hosts)
    async with open_channel(f"localhost:{settings.grpc_port('scenario')}") as channel:
        stub = scenario_pb2_grpc.MerakScenarioServiceStub(channel)
        watch = NbWatch(nb)
        try:
            before = known_ports(watch, hosts * per_host)
            if report.ok:
                await stub.UpdateComputeConfig(
                    scenario_pb2.UpdateComputeConfigRequest(
                        config=scenario_pb2.ComputeConfig(
                            id=report.ids["compute"], number_of_vm_per_vpc=total
                        ),
                        update_mask=field_mask_pb2.FieldMask(paths=["number_of_vm_per_vpc"]),
                    )
                )
                action = scenario_pb2.ServiceAction(
                    service_name=scenario_pb2.COMPUTE, action=scenario_pb2.UPDATE
                )
                reply = await stub.ScenarioAction(
                    scenario_pb2.ScenarioActionRequest(scenario_id=scenario_id, service=action), timeout=60
                )
                details["update"] = reply.return_message[:200]
                watch.wait_up(total - len(before), timeout=600, exclude=before)
            added = watch.result(total - len(before), exclude=before)
        finally:
            watch.close()
        try:
            await stub.DeleteScenario(
                scenario_pb2.DeleteScenarioRequest(id=scenario_id, teardown=True), timeout=600
            )
            details["teardown"] = "done"
        except grpc.aio.AioRpcError as exc:
            details["teardown"] = f"{exc.code().name}: {(exc.details() or '')[:200]}"
    return start, added, details
