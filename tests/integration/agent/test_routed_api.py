"""SetVpcPeers in routed form over real gRPC: the fake plane records it, bad fields are INVALID_ARGUMENT
naming the field, a bridged VPC refuses it, and a real two-vhost lab pings across it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest

from merak.v1 import agent_pb2, agent_pb2_grpc
from merak.vhostsfile import Vhost
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from tests.integration.agent.test_real_plane import lab
from tests.support.plugin import StartServer

ROUTED = agent_pb2.VpcSpec(
    vpc_id="vpc-r",
    vni=6101,
    gateway_mac="02:00:00:00:61:01",
    subnets=[
        agent_pb2.SubnetGateway(cidr="10.1.0.0/24", gateway="10.1.0.1"),
        agent_pb2.SubnetGateway(cidr="10.1.1.0/24", gateway="10.1.1.1"),
    ],
    routed=True,
)
BRIDGED = agent_pb2.VpcSpec(
    vpc_id="vpc-b",
    vni=6102,
    gateway_mac="02:00:00:00:61:02",
    subnets=[agent_pb2.SubnetGateway(cidr="10.1.0.0/24", gateway="10.1.0.1")],
)


def vm(name: str, vpc: agent_pb2.VpcSpec, ip: str, index: int) -> agent_pb2.VmSpec:
    """A /24 VM of `vpc` whose gateway is the .1 of its subnet."""
    return agent_pb2.VmSpec(
        name=name, vpc_id=vpc.vpc_id, vni=vpc.vni, ip=ip, prefix_len=24,
        mac=f"02:61:00:00:00:{index:02x}", gateway=ip.rsplit(".", 1)[0] + ".1",
    )  # fmt: skip


@asynccontextmanager
async def serve(
    grpc_server: StartServer, servicer: AgentServicer
) -> AsyncIterator[agent_pb2_grpc.MerakAgentServiceAsyncStub]:
    """A stub of `servicer` served on port 0."""
    address = await grpc_server([registration(servicer)])
    async with grpc.aio.insecure_channel(address) as channel:
        yield agent_pb2_grpc.MerakAgentServiceStub(channel)


@pytest.fixture
async def fake(grpc_server: StartServer) -> AsyncIterator[agent_pb2_grpc.MerakAgentServiceAsyncStub]:
    """An agent of one fake vhost ("local") with the routed VPC (two VMs: one inside its block, one
    borrowed) and the bridged one."""
    servicer = AgentServicer(VhostSet.standalone())
    try:
        async with serve(grpc_server, servicer) as stub:
            reply = await stub.CreateVms(
                agent_pb2.CreateVmsRequest(
                    vhost="local",
                    vpcs=[ROUTED, BRIDGED],
                    vms=[vm("r0", ROUTED, "10.1.0.10", 1), vm("r1", ROUTED, "10.1.0.200", 2)],
                )
            )
            assert reply.created == 2, reply
            yield stub
    finally:
        await servicer.close()


def routed_request(vni: int = ROUTED.vni) -> agent_pb2.SetVpcPeersRequest:
    """A routed SetVpcPeers for VNI `vni` on "local": two peers, its own block."""
    return agent_pb2.SetVpcPeersRequest(
        vhost="local",
        vni=vni,
        routed=True,
        peers=[
            agent_pb2.VpcPeer(vtep="192.0.2.2", prefixes=["10.1.0.64/26", "10.1.1.0/26"]),
            agent_pb2.VpcPeer(vtep="192.0.2.3", prefixes=["10.1.0.128/26", "10.1.0.30/32"]),
        ],
        local_prefixes=["10.1.0.0/26"],
    )


async def test_the_fake_plane_records_routed_peers(fake: agent_pb2_grpc.MerakAgentServiceAsyncStub) -> None:
    reply = await fake.SetVpcPeers(routed_request())
    # r1 (10.1.0.200) is outside the vhost's block: it would get a /32 on br0.
    assert (reply.vteps, reply.routes, reply.local_routes) == (2, 4, 1)
    pinged = await fake.Ping(agent_pb2.PingRequest(vhost="local", vm="r0", destinations=["10.1.0.70"]))
    assert pinged.passed == 1
    emptied = await fake.SetVpcPeers(agent_pb2.SetVpcPeersRequest(vhost="local", vni=ROUTED.vni, routed=True))
    assert (emptied.vteps, emptied.routes, emptied.local_routes) == (0, 0, 2)


async def test_the_fake_plane_leaves_itself_and_its_own_vms_out(grpc_server: StartServer) -> None:
    """A fake vhost with a VTEP counts as the real plane does: a peer at its own VTEP is itself, and a
    prefix a peer claims for a VM that is here is not routed away."""
    vhosts = VhostSet("", "fake", {"fv": Vhost("fv", 0, "", "fake-fv", "192.0.2.1", 24, "", "")})
    servicer = AgentServicer(vhosts)
    try:
        async with serve(grpc_server, servicer) as stub:
            made = await stub.CreateVms(
                agent_pb2.CreateVmsRequest(
                    vhost="fv",
                    vpcs=[ROUTED],
                    vms=[vm("r0", ROUTED, "10.1.0.10", 1), vm("r1", ROUTED, "10.1.0.200", 2)],
                )
            )
            assert made.created == 2, made
            request = routed_request()
            request.vhost = "fv"
            request.peers.add(vtep="192.0.2.1", prefixes=["10.1.0.192/26"])  # itself
            request.peers[1].prefixes.append("10.1.0.200/32")  # r1, which is here
            reply = await stub.SetVpcPeers(request)
            assert (reply.vteps, reply.routes, reply.local_routes) == (2, 4, 1)
    finally:
        await servicer.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.peers[0].prefixes.append("10.1.0.1/26"), "peers[0].prefixes[2]"),
        (lambda r: r.peers[1].prefixes.append("10.1.0.64/26"), "peers[1].prefixes[2]"),  # peer 0's too
        (lambda r: setattr(r.peers[1], "vtep", "192.0.2.300"), "peers[1].vtep"),
        (lambda r: setattr(r.peers[1], "vtep", "192.0.2.2"), "peers[1].vtep"),  # one vhost twice
        (lambda r: r.local_prefixes.append("10.1.0.0/26 dev lo"), "local_prefixes[1]"),
        (lambda r: r.local_prefixes.append("0.0.0.0/0"), "local_prefixes[1]"),
        (lambda r: setattr(r, "vni", 0), "vni"),
    ],
)
async def test_a_bad_field_is_invalid_argument_naming_it(
    fake: agent_pb2_grpc.MerakAgentServiceAsyncStub, change: object, field: str
) -> None:
    request = routed_request()
    change(request)  # type: ignore[operator]  # a lambda of the parameter list
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake.SetVpcPeers(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith(f"{field}: "), caught.value.details()


async def test_a_bridged_vpc_refuses_the_routed_form(fake: agent_pb2_grpc.MerakAgentServiceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await fake.SetVpcPeers(routed_request(vni=BRIDGED.vni))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not routed" in (caught.value.details() or "")
    # The bridged form is as it was.
    reply = await fake.SetVpcPeers(
        agent_pb2.SetVpcPeersRequest(vhost="local", vni=BRIDGED.vni, vteps=["192.0.2.2"])
    )
    assert reply.vteps == 1


@pytest.mark.root
async def test_a_real_lab_pings_across_a_routed_vpc(grpc_server: StartServer) -> None:
    # The lab is built and removed with pyroute2's synchronous API, which runs an event loop of its own.
    building = lab(2)
    pair = await asyncio.to_thread(building.__enter__)
    try:
        vhosts = {
            f"h{i}": Vhost(f"h{i}", i, v.ns, v.dp.prefix, v.ip, 24, "ul0", f"02:00:00:00:01:0{i}")
            for i, v in enumerate(pair)
        }
        servicer = AgentServicer(VhostSet("routed", "real", vhosts))
        try:
            async with serve(grpc_server, servicer) as stub:
                made = {
                    "h0": [vm("r0", ROUTED, "10.1.0.10", 1), vm("r0b", ROUTED, "10.1.0.100", 2)],
                    "h1": [vm("r1", ROUTED, "10.1.0.70", 3), vm("r1s", ROUTED, "10.1.1.70", 4)],
                }
                blocks = {"h0": ["10.1.0.0/26", "10.1.0.100/32"], "h1": ["10.1.0.64/26", "10.1.1.64/26"]}
                for name, vms in made.items():
                    reply = await stub.CreateVms(
                        agent_pb2.CreateVmsRequest(vhost=name, vpcs=[ROUTED], vms=vms)
                    )
                    assert reply.created == 2, reply
                replies = {}
                for name, other in (("h0", "h1"), ("h1", "h0")):
                    peer = agent_pb2.VpcPeer(vtep=vhosts[other].datapath_ip, prefixes=blocks[other])
                    request = agent_pb2.SetVpcPeersRequest(
                        vhost=name, vni=ROUTED.vni, routed=True, peers=[peer], local_prefixes=blocks[name]
                    )
                    peers_set = await stub.SetVpcPeers(request)
                    replies[name] = (peers_set.vteps, peers_set.routes, peers_set.local_routes)
                # h0's borrowed 10.1.0.100 is outside its block: a /32 on its br0.
                assert replies == {"h0": (1, 2, 1), "h1": (1, 2, 0)}
                dests = ["10.1.0.70", "10.1.1.70", "10.1.0.1", "10.1.0.100"]
                pinged = await stub.Ping(
                    agent_pb2.PingRequest(vhost="h0", vm="r0", destinations=dests, retry_seconds=5)
                )
                assert pinged.failed == 0, [(r.destination, r.error) for r in pinged.results if not r.ok]
                pinged = await stub.Ping(
                    agent_pb2.PingRequest(
                        vhost="h1", vm="r1s", destinations=["10.1.0.10", "10.1.0.100"], retry_seconds=5
                    )
                )
                assert pinged.failed == 0, [(r.destination, r.error) for r in pinged.results if not r.ok]
        finally:
            await servicer.close()
    finally:
        await asyncio.to_thread(building.__exit__, None, None, None)
