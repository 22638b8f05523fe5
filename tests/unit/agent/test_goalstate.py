"""Goal states applied and replied to as Alcor's Control Agent does (#29 item 2, its core): each resource
type read, applied through the recording applier and answered with its status and timings; bad ones
INVALID_ARG while the others go on; a port without its device PENDING and retried; and the gRPC face on a
real socket: PushGoalStatesStream answers the first message once and ends the call though the client
never half-closes, PushNetworkResourceStates answers with neighbour statuses too (V1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from alcor.schema import (
    common_pb2,
    goalstate_pb2,
    goalstateprovisioner_pb2,
    goalstateprovisioner_pb2_grpc,
    neighbor_pb2,
)
from merak.errors import FailedPrecondition
from merak.grpcserver import GrpcServer
from merak.vhostsfile import Vhost
from services.agent.goalstate.plan import NeighborWork, PortWork, from_v1, from_v2, tap_name
from services.agent.goalstate.provisioner import (
    GoalStateProvisionerServicer,
    Outcome,
    Provisioner,
    registration,
)
from services.agent.goalstate.record import RecordingApplier
from services.agent.server import AgentServicer
from services.agent.vhosts import VhostSet
from tests.support import assert_eventually

PORT_ID = "1a2b3c4d-5e6f-4711-8899-aabbccddeeff"
PEER_ID = "99999999-0000-4000-8000-000000000001"
HOST_IP, PEER_HOST = "192.168.10.1", "192.168.10.2"


def dpm_message(*, port_op: int = common_pb2.CREATE) -> goalstate_pb2.GoalStateV2:
    """What DPM/NCM send to H1 for a new port P (alcor-southbound.md §3.4): VPC and subnet as INFO,
    the port, a neighbour entry for a port on another host, a DHCP entry, the router."""
    gs = goalstate_pb2.GoalStateV2(format_version=102)
    vpc = gs.vpc_states["vpc-1"]
    vpc.operation_type = common_pb2.INFO
    vpc.configuration.id, vpc.configuration.cidr = "vpc-1", "10.0.0.0/16"
    subnet = gs.subnet_states["sn-1"]
    subnet.operation_type = common_pb2.INFO
    config = subnet.configuration
    config.id, config.vpc_id, config.cidr, config.tunnel_id = "sn-1", "vpc-1", "10.0.1.0/24", 21
    config.gateway.ip_address, config.gateway.mac_address = "10.0.1.1", "aa:bb:cc:00:00:01"
    port = gs.port_states[PORT_ID]
    port.operation_type = port_op  # type: ignore[assignment]
    pc = port.configuration
    pc.revision_number, pc.id, pc.vpc_id, pc.update_type = 1, PORT_ID, "vpc-1", common_pb2.FULL
    pc.mac_address, pc.device_id, pc.device_owner = "fa:16:3e:00:00:05", "vm-1", "compute:nova"
    pc.fixed_ips.add(subnet_id="sn-1", ip_address="10.0.1.5")
    neighbor = gs.neighbor_states[f"L2/{PEER_ID}"]
    neighbor.operation_type = common_pb2.UPDATE
    nc = neighbor.configuration
    nc.id, nc.vpc_id, nc.mac_address, nc.host_ip_address = PEER_ID, "vpc-1", "fa:16:3e:00:00:06", PEER_HOST
    nc.fixed_ips.add(neighbor_type=neighbor_pb2.L2, subnet_id="sn-1", ip_address="10.0.1.6")
    dhcp = gs.dhcp_states["dhcp-1"]
    dhcp.operation_type = common_pb2.CREATE
    dc = dhcp.configuration
    dc.id, dc.subnet_id, dc.mac_address, dc.ipv4_address = "dhcp-1", "sn-1", "fa:16:3e:00:00:05", "10.0.1.5"
    router = gs.router_states["router-1"]
    router.operation_type = common_pb2.INFO
    router.configuration.id = "router-1"
    router.configuration.subnet_routing_tables.add(subnet_id="sn-1")
    gs.host_resources[HOST_IP].resources.add(type=common_pb2.PORT, id=PORT_ID)
    return gs


@asynccontextmanager
async def provisioner_server(applier: RecordingApplier) -> AsyncIterator[int]:
    """GoalStateProvisioner on a loopback port of its own, applying through `applier`; the port."""
    provisioner = Provisioner(applier)
    servicer = GoalStateProvisionerServicer(lambda _hosts: provisioner)
    server = GrpcServer("127.0.0.1:0", [registration(servicer)], CollectorRegistry())
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop(0)
        await provisioner.close()


def statuses(reply: object) -> dict[tuple[int, str], int]:
    return {
        (s.resource_type, s.resource_id): s.operation_status
        for s in reply.operation_statuses  # type: ignore[attr-defined]
    }


async def test_a_port_its_neighbour_dhcp_and_router_are_applied_and_answered() -> None:
    applier = RecordingApplier()
    provisioner = Provisioner(applier, local_ips={HOST_IP})
    reply = await provisioner.apply(from_v2(dpm_message()), neighbor_statuses=False)
    # PORT, ROUTER and DHCP statuses (V2 reports none for neighbours), all SUCCESS; µs timings.
    assert statuses(reply) == {
        (common_pb2.ROUTER, "router-1"): common_pb2.SUCCESS,
        (common_pb2.PORT, PORT_ID): common_pb2.SUCCESS,
        (common_pb2.DHCP, "dhcp-1"): common_pb2.SUCCESS,
    }
    port_status = next(s for s in reply.operation_statuses if s.resource_type == common_pb2.PORT)
    assert port_status.operation_type == common_pb2.CREATE
    assert reply.message_total_operation_time >= port_status.state_elapse_time
    port = applier.ports[PORT_ID]
    assert (port.tap, port.vni, port.ip, port.prefix_len, port.mac) == (
        "tap1a2b3c4d-5e",
        21,
        "10.0.1.5",
        24,
        "fa:16:3e:00:00:05",
    )
    assert port.tap == tap_name(PORT_ID) and len(port.tap) == 14
    peer = applier.neighbors[(21, "10.0.1.6")]
    assert (peer.id, peer.mac, peer.host_ip, peer.l3) == (PEER_ID, "fa:16:3e:00:00:06", PEER_HOST, False)
    assert applier.routers["router-1"].gateways == ((21, "10.0.1.1", "aa:bb:cc:00:00:01"),)
    assert applier.dhcp_entries["fa:16:3e:00:00:05"].ip == "10.0.1.5"
    # DELETE takes them away again; UPDATE with no device is a delete too (ACA V2).
    gone = dpm_message(port_op=common_pb2.UPDATE)
    gone.port_states[PORT_ID].configuration.device_id = ""
    gone.port_states[PORT_ID].configuration.device_owner = ""
    gone.neighbor_states[f"L2/{PEER_ID}"].operation_type = common_pb2.DELETE
    reply = await provisioner.apply(from_v2(gone), neighbor_statuses=False)
    assert statuses(reply)[(common_pb2.PORT, PORT_ID)] == common_pb2.SUCCESS
    assert applier.ports == {} and applier.neighbors == {}


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        (lambda gs: gs.subnet_states["sn-1"].configuration.__setattr__("tunnel_id", 0), "subnet vni 0"),
        (lambda gs: gs.subnet_states["sn-1"].configuration.__setattr__("tunnel_id", 1 << 24), "vni 2^24"),
        (lambda gs: gs.subnet_states["sn-1"].configuration.__setattr__("cidr", "10.0.1.0"), "no prefix"),
        (lambda gs: gs.port_states[PORT_ID].configuration.__setattr__("mac_address", "zz"), "bad MAC"),
        (lambda gs: gs.port_states[PORT_ID].configuration.__setattr__("update_type", 0), "DELTA create"),
        (lambda gs: gs.port_states[PORT_ID].configuration.ClearField("fixed_ips"), "no fixed IP"),
        (
            lambda gs: gs.port_states[PORT_ID].__setattr__("operation_type", common_pb2.UPDATE),
            "UPDATE+device",
        ),
        (lambda gs: gs.subnet_states.pop("sn-1"), "subnet missing"),
    ],
)
async def test_a_bad_port_is_invalid_arg_and_the_rest_goes_on(change: object, refused: str) -> None:
    gs = dpm_message()
    change(gs)  # type: ignore[operator]
    applier = RecordingApplier()
    reply = await Provisioner(applier).apply(from_v2(gs), neighbor_statuses=False)
    assert statuses(reply)[(common_pb2.PORT, PORT_ID)] == common_pb2.INVALID_ARG, refused
    assert PORT_ID not in applier.ports
    assert statuses(reply)[(common_pb2.DHCP, "dhcp-1")] == common_pb2.SUCCESS  # not held up by it


async def test_v1_reports_neighbours_and_a_local_one_needs_nothing() -> None:
    v2 = dpm_message()
    v1 = goalstate_pb2.GoalState(format_version=101)
    v1.subnet_states.append(v2.subnet_states["sn-1"])
    v1.port_states.append(v2.port_states[PORT_ID])
    v1.neighbor_states.append(v2.neighbor_states[f"L2/{PEER_ID}"])
    local = goalstate_pb2.GoalStateV2().neighbor_states["x"]
    local.CopyFrom(v2.neighbor_states[f"L2/{PEER_ID}"])
    local.configuration.id, local.configuration.host_ip_address = "local-port", HOST_IP
    local.configuration.fixed_ips[0].ip_address = "10.0.1.7"
    v1.neighbor_states.append(local)
    applier = RecordingApplier()
    reply = await Provisioner(applier, local_ips={HOST_IP}).apply(from_v1(v1), neighbor_statuses=True)
    assert statuses(reply)[(common_pb2.NEIGHBOR, PEER_ID)] == common_pb2.SUCCESS
    assert statuses(reply)[(common_pb2.NEIGHBOR, "local-port")] == common_pb2.SUCCESS
    assert set(applier.neighbors) == {(21, "10.0.1.6")}  # the one on this host needed nothing
    # V1 finds a subnet only when its state is INFO.
    v1.subnet_states[0].operation_type = common_pb2.CREATE
    reply = await Provisioner(RecordingApplier()).apply(from_v1(v1), neighbor_statuses=True)
    assert statuses(reply)[(common_pb2.PORT, PORT_ID)] == common_pb2.INVALID_ARG


async def test_a_port_without_its_device_is_pending_then_applied_when_it_appears() -> None:
    devices: set[str] = set()
    applier = RecordingApplier(has_device=devices.__contains__)
    provisioner = Provisioner(applier, retry_seconds=0.01, retries=1000)
    try:
        reply = await provisioner.apply(from_v2(dpm_message()), neighbor_statuses=False)
        assert statuses(reply)[(common_pb2.PORT, PORT_ID)] == common_pb2.PENDING
        assert provisioner.pending == [PORT_ID] and PORT_ID not in applier.ports
        devices.add(tap_name(PORT_ID))  # the VM's device comes (Merak or Nova makes it)
        await assert_eventually(lambda: PORT_ID in applier.ports, timeout=10)
        await assert_eventually(lambda: provisioner.pending == [], timeout=10)
    finally:
        await provisioner.close()


async def test_an_applier_error_is_failure_not_a_crash() -> None:
    class Broken(RecordingApplier):
        async def port(self, work: PortWork) -> Outcome:
            raise OSError("the datapath said no")

        async def neighbor_batch(self, works: Sequence[NeighborWork]) -> list[Outcome]:
            raise OSError("the neighbour table is full")

    reply = await Provisioner(Broken()).apply(from_v2(dpm_message()), neighbor_statuses=True)
    assert statuses(reply)[(common_pb2.PORT, PORT_ID)] == common_pb2.FAILURE
    assert statuses(reply)[(common_pb2.NEIGHBOR, PEER_ID)] == common_pb2.FAILURE
    assert statuses(reply)[(common_pb2.DHCP, "dhcp-1")] == common_pb2.SUCCESS


async def test_the_stream_answers_its_first_message_once_and_ends_the_call() -> None:
    applier = RecordingApplier()
    never = asyncio.Event()
    try:
        async with (
            provisioner_server(applier) as port,
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stub = goalstateprovisioner_pb2_grpc.GoalStateProvisionerStub(channel)

            async def one_then_hold() -> AsyncIterator[goalstate_pb2.GoalStateV2]:
                yield dpm_message()
                await never.wait()  # NCM never half-closes its stream

            call = stub.PushGoalStatesStream(one_then_hold(), timeout=30)
            replies = [reply async for reply in call]
            assert len(replies) == 1
            assert statuses(replies[0])[(common_pb2.PORT, PORT_ID)] == common_pb2.SUCCESS
            assert await call.code() == grpc.StatusCode.OK
            assert PORT_ID in applier.ports
            # V1, unary.
            v1 = goalstate_pb2.GoalState()
            v1.subnet_states.append(dpm_message().subnet_states["sn-1"])
            v1.neighbor_states.append(dpm_message().neighbor_states[f"L2/{PEER_ID}"])
            reply = await stub.PushNetworkResourceStates(v1, timeout=30)
            assert statuses(reply) == {(common_pb2.NEIGHBOR, PEER_ID): common_pb2.SUCCESS}
            with pytest.raises(grpc.aio.AioRpcError) as caught:  # NCM's method, not an agent's
                await stub.RequestGoalStates(goalstateprovisioner_pb2.HostRequest(), timeout=10)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        never.set()


async def test_an_agent_of_several_vhosts_picks_the_one_a_goal_state_names() -> None:
    vhosts = {
        name: Vhost(name, i, "", f"gs-unit-{i}", f"10.9.0.{i + 1}", 24, "", "")
        for i, name in enumerate(("vhost-0", "vhost-1"))
    }
    servicer = AgentServicer(VhostSet("t", "fake", vhosts))
    try:
        first, second = servicer.goalstates.pick(["10.9.0.1"]), servicer.goalstates.pick(["10.9.0.2"])
        assert first is not second
        with pytest.raises(FailedPrecondition, match="host_resources: the goal state names no vhost"):
            servicer.goalstates.pick(["192.0.2.1"])
        # On a fake vhost, the port of a VM that does not exist is PENDING; the neighbour is pushed.
        reply = await second.apply(from_v2(dpm_message()), neighbor_statuses=False)
        assert statuses(reply)[(common_pb2.PORT, PORT_ID)] == common_pb2.PENDING
        assert servicer.goalstates.applied == 1
    finally:
        await servicer.close()


async def test_a_vhost_serves_goal_states_on_its_own_address_once_asked(tmp_path: Path) -> None:
    vhosts = {
        name: Vhost(name, i, "", f"gs-srv-{i}", f"10.9.1.{i + 1}", 24, "", "", "127.0.0.1:0")
        for i, name in enumerate(("vhost-0", "vhost-1"))
    }
    marker = tmp_path / "agent-0.goalstates"
    servicer = AgentServicer(VhostSet("t", "fake", vhosts), goalstate_marker=marker)
    try:
        assert servicer.goalstates.serving == {}
        where = await servicer.goalstates.serve("vhost-1")
        assert await servicer.goalstates.serve("vhost-1") == where  # once: the same server again
        assert servicer.goalstates.serving == {"vhost-1": where}
        async with grpc.aio.insecure_channel(where) as channel:
            stub = goalstateprovisioner_pb2_grpc.GoalStateProvisionerStub(channel)
            # Its own server: the goal state is that vhost's, whatever host_resources says (as ACA).
            message = dpm_message()
            message.host_resources.clear()
            replies = [r async for r in stub.PushGoalStatesStream(iter([message]), timeout=30)]
            assert statuses(replies[0])[(common_pb2.PORT, PORT_ID)] == common_pb2.PENDING
            health = health_pb2_grpc.HealthStub(channel)
            asked = health_pb2.HealthCheckRequest(service="alcor.schema.GoalStateProvisioner")
            reply = await health.Check(asked, timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert servicer.goalstates.pick(["10.9.1.2"]).applied == 1
        assert servicer.goalstates.pick(["10.9.1.1"]).applied == 0
    finally:
        await servicer.close()
    assert servicer.goalstates.serving == {}
    # The agent started again (a crash, a host fault healed) serves that vhost at once, as before.
    assert marker.read_text() == "vhost-1\n"
    again = AgentServicer(VhostSet("t", "fake", vhosts), goalstate_marker=marker)
    try:
        assert await again.goalstates.resume() == ["vhost-1"]
        assert list(again.goalstates.serving) == ["vhost-1"]
    finally:
        await again.close()
