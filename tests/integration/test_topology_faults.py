"""Impairing a running lab through the topology service (SetFaults / ListFaults / ClearFaults): the
kernel does what the request says, what a later request leaves out is healed, DELETE forgets it."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import httpx
import pytest
import redis.asyncio as aioredis

from merak.naming import topology_short_id
from merak.procs import process_state
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, topology_pb2, topology_pb2_grpc
from merak_tools.ovncentral import RunningCentral
from services.topology.backends.local import ns_name
from tests.stack import ServiceStack
from tests.support import assert_eventually, unique_name

pytestmark = [pytest.mark.root, pytest.mark.slow]
# The async stub type exists only in the generated stubs (.pyi).
Stub: TypeAlias = "topology_pb2_grpc.MerakTopologyServiceAsyncStub"


@contextlib.asynccontextmanager
async def _topology(services: ServiceStack, **settings: Any) -> AsyncIterator[Stub]:
    await services.topology(**settings)
    async with grpc.aio.insecure_channel(services.addresses["topology"]) as channel:
        yield topology_pb2_grpc.MerakTopologyServiceStub(channel)


@pytest.fixture
async def stub(services: ServiceStack) -> AsyncIterator[Stub]:
    async with _topology(services) as made:
        yield made


@pytest.fixture
async def ovn_stub(services: ServiceStack, ovn_central: RunningCentral) -> AsyncIterator[Stub]:
    """A topology service whose agents may make their vhosts chassis of `ovn_central` (it passes its
    MERAK_CONTROL_PLANE_ALLOW on to them)."""
    async with _topology(services, control_plane_allow=ovn_central.sb) as made:
        yield made


async def _lab(stub: Stub, vhosts: int = 3, dataplane: str = "") -> tuple[str, list[str]]:
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=unique_name("flt-"), topology_type=topology_pb2.TREE, number_of_vhosts=vhosts,
        vhost_per_rack=vhosts, ports_per_vswitch=vhosts + 1, data_plane_cidr="10.224.0.0/24",
        dataplane=dataplane,
    )  # fmt: skip
    await stub.TopologyHandler(
        topology_pb2.InternalTopologyInfo(operation_type=common_pb2.CREATE, config=config)
    )
    info = topology_pb2.InternalTopologyInfo(operation_type=common_pb2.INFO, config=config)

    async def ready() -> list[str] | None:
        reply = await stub.TopologyHandler(info)
        built = "topology READY" in reply.return_message and all(
            n.status == common_pb2.READY for n in reply.compute_nodes
        )
        return [n.datapath_ip for n in reply.compute_nodes] if built else None

    ips: list[str] = await assert_eventually(ready, timeout=60, message="lab ready")
    return config.topology_id, ips


def _reaches(topology_id: str, src: int, ip: str) -> bool:
    ns = ns_name(topology_short_id(topology_id), f"vhost-{src}")
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", ip], capture_output=True, check=False
    )
    return done.returncode == 0


async def _delete(stub: Stub, topology_id: str) -> None:
    config = topology_pb2.InternalTopologyConfiguration(topology_id=topology_id)
    await stub.TopologyHandler(
        topology_pb2.InternalTopologyInfo(operation_type=common_pb2.DELETE, config=config)
    )


async def test_faults_are_set_replaced_listed_and_cleared(stub: Stub, redis_client: aioredis.Redis) -> None:
    topology_id, ips = await _lab(stub)
    try:
        assert all(_reaches(topology_id, 0, ip) for ip in ips[1:])
        partition = topology_pb2.Partition(side_a=["vhost-0"], side_b=["vhost-1"])
        reply = await stub.SetFaults(
            topology_pb2.SetFaultsRequest(topology_id=topology_id, partitions=[partition])
        )
        assert list(reply.partitions) == [partition]
        assert not _reaches(topology_id, 0, ips[1]) and not _reaches(topology_id, 1, ips[0])
        assert _reaches(topology_id, 0, ips[2]) and _reaches(topology_id, 1, ips[2])

        # Declarative: this request has no partition, so it heals it; vhost-2's link goes down.
        down = topology_pb2.LinkFault(node="vhost-2", down=True)
        await stub.SetFaults(topology_pb2.SetFaultsRequest(topology_id=topology_id, links=[down]))
        assert _reaches(topology_id, 0, ips[1])
        assert not _reaches(topology_id, 0, ips[2])
        listed = await stub.ListFaults(topology_pb2.ListFaultsRequest(topology_id=topology_id))
        assert (list(listed.links), list(listed.partitions)) == ([down], [])

        await stub.ClearFaults(topology_pb2.ClearFaultsRequest(topology_id=topology_id))
        assert all(_reaches(topology_id, 0, ip) for ip in ips[1:])
    finally:
        await _delete(stub, topology_id)
    assert await redis_client.keys(f"merak:topology:topo:{topology_id}:*") == []


async def test_bad_faults_are_refused_naming_the_field(stub: Stub) -> None:
    topology_id, _ips = await _lab(stub, vhosts=2)
    try:
        link, both = topology_pb2.LinkFault, topology_pb2.Partition(side_a=["vhost-0"], side_b=["vhost-0"])
        invalid = grpc.StatusCode.INVALID_ARGUMENT
        faults = partial(topology_pb2.SetFaultsRequest, topology_id=topology_id)
        for request, code, field in (
            (faults(links=[link(node="nope")]), invalid, "links[0].node"),
            (faults(links=[link(node="vhost-0", loss_percent=200)]), invalid, "links[0].loss_percent"),
            (faults(partitions=[both]), invalid, "partitions[0]"),
            (topology_pb2.SetFaultsRequest(topology_id="missing"), grpc.StatusCode.NOT_FOUND, ""),
        ):  # fmt: skip
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.SetFaults(request)
            assert caught.value.code() == code, caught.value.details()
            assert (caught.value.details() or "").startswith(field)
        listed = await stub.ListFaults(topology_pb2.ListFaultsRequest(topology_id=topology_id))
        assert not listed.links and not listed.partitions  # nothing half-set
    finally:
        await _delete(stub, topology_id)


async def test_a_fake_lab_has_no_links_to_impair(stub: Stub) -> None:
    topology_id, _ips = await _lab(stub, vhosts=2, dataplane="fake")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SetFaults(
                topology_pb2.SetFaultsRequest(
                    topology_id=topology_id, links=[topology_pb2.LinkFault(node="vhost-0")]
                )
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await _delete(stub, topology_id)


def _pid(node: common_pb2.InternalComputeInfo) -> int:
    return int(Path(node.agent_endpoint.removeprefix("unix://")).with_suffix(".pid").read_text())


async def test_host_faults_crash_and_freeze_agents_and_bring_them_back(stub: Stub) -> None:
    topology_id, _ips = await _lab(stub)  # 3 vhosts, an agent each
    config = topology_pb2.InternalTopologyConfiguration(topology_id=topology_id)
    info = topology_pb2.InternalTopologyInfo(operation_type=common_pb2.INFO, config=config)
    try:
        nodes = list((await stub.TopologyHandler(info)).compute_nodes)
        pids = [_pid(n) for n in nodes]
        crash = topology_pb2.HostFault(vhost="vhost-1", state=topology_pb2.HOST_CRASHED)
        freeze = topology_pb2.HostFault(vhost="vhost-2", state=topology_pb2.HOST_FROZEN)
        reply = await stub.SetFaults(
            topology_pb2.SetFaultsRequest(topology_id=topology_id, hosts=[crash, freeze])
        )
        assert list(reply.hosts) == [crash, freeze]
        assert process_state(pids[1]) in ("", "Z") and process_state(pids[2]) == "T"
        for _ in range(3):  # held down across the supervisor's 1 s restart delay
            said = await stub.TopologyHandler(info)
            after = {n.name: n for n in said.compute_nodes}
            # INFO's message never says READY while a host is not; it names those that are not.
            assert "READY" not in said.return_message, said.return_message
            assert "2 of 3 vhosts not ready (vhost-1 ERROR, vhost-2 " in said.return_message, (
                said.return_message
            )
            assert after["vhost-0"].status == common_pb2.READY
            assert after["vhost-1"].status == common_pb2.ERROR
            assert "crashed by a host fault" in after["vhost-1"].status_detail
            assert "frozen by a host fault" in after["vhost-2"].status_detail
            assert process_state(pids[1]) in ("", "Z")

        await stub.ClearFaults(topology_pb2.ClearFaultsRequest(topology_id=topology_id))

        async def all_ready() -> bool:
            return all(n.status == common_pb2.READY for n in (await stub.TopologyHandler(info)).compute_nodes)

        ready: bool = await assert_eventually(all_ready, timeout=30, message="agents back")
        assert ready
        back = list((await stub.TopologyHandler(info)).compute_nodes)
        assert _pid(back[1]) != pids[1] and _pid(back[2]) == pids[2] and process_state(pids[2]) in ("S", "R")
        assert [n.status_detail for n in back] == ["", "", ""]
    finally:
        await _delete(stub, topology_id)


async def test_faults_over_rest(temporal_services: ServiceStack) -> None:
    services = temporal_services
    await services.topology()
    await services.network()
    await services.compute()
    await services.scenario()
    async with grpc.aio.insecure_channel(services.addresses["topology"]) as channel:
        topology = topology_pb2_grpc.MerakTopologyServiceStub(channel)
        topology_id, ips = await _lab(topology, vhosts=2)
        url = f"http://{services.addresses['rest']}/api/topologies/{topology_id}/faults"
        try:
            async with httpx.AsyncClient(timeout=60) as http:
                body = {"partitions": [{"side_a": ["vhost-0"], "side_b": ["vhost-1"]}]}
                put = await http.put(url, json=body)
                assert put.status_code == 200, put.text
                assert put.json()["data"]["partitions"] == body["partitions"]
                assert not _reaches(topology_id, 0, ips[1])
                assert (await http.get(url)).json()["data"]["partitions"] == body["partitions"]
                assert (await http.delete(url)).status_code == 200
                assert _reaches(topology_id, 0, ips[1])
                bad = await http.put(url, json={"links": [{"node": "nope"}]})
                assert (bad.status_code, bad.json()["status"]) == (400, "FAILED"), bad.text
                assert "links[0].node" in bad.json()["message"]
                assert (await http.put(url, content=b"{not json")).status_code == 400
                missing = await http.get(url.replace(topology_id, "no-such-lab"))
                assert missing.status_code == 404
        finally:
            await _delete(topology, topology_id)


async def test_an_ovn_controller_crashed_by_a_fault_stays_down_until_healed(
    ovn_stub: Stub, ovn_central: RunningCentral
) -> None:
    stub = ovn_stub
    topology_id, _ips = await _lab(stub, vhosts=2)
    try:
        info = await stub.TopologyHandler(
            topology_pb2.InternalTopologyInfo(
                operation_type=common_pb2.INFO,
                config=topology_pb2.InternalTopologyConfiguration(topology_id=topology_id),
            )
        )
        node = next(n for n in info.compute_nodes if n.name == "vhost-1")
        async with grpc.aio.insecure_channel(node.agent_endpoint) as channel:
            agent = agent_pb2_grpc.MerakAgentServiceStub(channel)
            await agent.EnsureChassis(
                agent_pb2.EnsureChassisRequest(vhost="vhost-1", sb_remote=ovn_central.sb)
            )
        assert "vhost-1" in _chassis(ovn_central)

        async def sampled() -> topology_pb2.ProcessGroupStats | None:
            reply = await stub.GetProcessStats(topology_pb2.ProcessStatsRequest(topology_id=topology_id))
            groups = {g.group: g for g in reply.groups}
            found = groups.get("ovn-controller")
            return found if found is not None and found.samples and found.samples[-1].processes == 1 else None

        controller: topology_pb2.ProcessGroupStats = await assert_eventually(
            sampled, timeout=10, message="ovn-controller sampled"
        )
        assert controller.samples[-1].rss_mib > 1

        async def registered() -> topology_pb2.ChassisSample | None:  # as the southbound database lists it
            reply = await stub.GetProcessStats(topology_pb2.ProcessStatsRequest(topology_id=topology_id))
            last = reply.chassis[-1] if reply.chassis else None
            return last if last is not None and (last.registered, last.chassis) == (1, 1) else None

        in_sb: topology_pb2.ChassisSample = await assert_eventually(registered, timeout=10, message="in SB")
        assert in_sb.at > 0
        crash = topology_pb2.ProcessFault(
            process="ovn-controller", vhost="vhost-1", state=topology_pb2.HOST_CRASHED
        )
        await stub.SetFaults(topology_pb2.SetFaultsRequest(topology_id=topology_id, processes=[crash]))
        listed = await stub.ListFaults(topology_pb2.ListFaultsRequest(topology_id=topology_id))
        assert list(listed.processes) == [crash]
        assert not _controller_running(topology_id, 1)
        # Healed: its agent starts it again, with the southbound database it had.
        await stub.ClearFaults(topology_pb2.ClearFaultsRequest(topology_id=topology_id))
        assert _controller_running(topology_id, 1)
        await assert_eventually(lambda: "vhost-1" in _chassis(ovn_central), timeout=20)
        with pytest.raises(grpc.aio.AioRpcError) as caught:  # vhost-0 never became a chassis
            await stub.SetFaults(
                topology_pb2.SetFaultsRequest(
                    topology_id=topology_id,
                    processes=[
                        topology_pb2.ProcessFault(
                            process="ovn-controller", vhost="vhost-0", state=topology_pb2.HOST_CRASHED
                        )
                    ],
                )
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        await _delete(stub, topology_id)
    # The chassis went with the topology: its ovn-controller left SB as it exited.
    await assert_eventually(lambda: "vhost-1" not in _chassis(ovn_central), timeout=20)


def _chassis(central: RunningCentral) -> list[str]:
    return subprocess.run(
        ["ovn-sbctl", f"--db={central.sb}", "--bare", "--columns=name", "list", "Chassis"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip


def _controller_running(topology_id: str, index: int) -> bool:
    found = subprocess.run(["pgrep", "-f", f"ovn-controller.*{topology_short_id(topology_id)}.*ovn/{index}/"],
                           capture_output=True, text=True, check=False)  # fmt: skip
    return bool(found.stdout.strip())
