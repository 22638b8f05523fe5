"""A callee's error reaches the caller with its code (merak.errors.from_rpc_error), pair by pair: the
scenario service over topology, network, compute and an agent (the connectivity test); compute over
network and topology; the compute worker over an agent; topology over an agent (a healed
ovn-controller). Real callees refuse real requests wherever they can be made to; a refusing server
on a real socket stands in only for the codes a real callee cannot be made to send on demand."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from temporalio.exceptions import ApplicationError

from merak.errors import ServiceError
from merak.grpcserver import ServiceRegistration
from merak.procs import is_ours
from merak.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    common_pb2,
    compute_pb2,
    compute_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    scenario_pb2,
    topology_pb2,
    topology_pb2_grpc,
)
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from services.compute.plugins.base import raise_activity_error
from services.compute.plugins.native import NativeVms
from services.compute.store import Meta, VmRecord
from services.scenario.clients import ServiceClients
from services.scenario.pingall import ConnectivityTest, PingOptions
from services.topology.backends.local.processes import ProcessFaults
from tests.integration.scenario_lab import Stack, act, create_scenario, topology_config, watch
from tests.stack import ServiceStack
from tests.support import assert_eventually, free_port, unique_name
from tests.support.plugin import StartServer

TOPOLOGY, NETWORK, DEPLOY = scenario_pb2.TOPOLOGY, scenario_pb2.NETWORK, scenario_pb2.DEPLOY
# A callee's answers about the request: each must reach the caller as it is.
PASSED = [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
]
# What says the call itself failed: UNAVAILABLE, whatever the transport said.
TRANSPORT = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED]
WORDS = "config.x: the callee's own words"


@dataclass
class Refusal:
    """What the refusing services answer to every call."""

    code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT
    details: str = WORDS

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        await context.abort(self.code, self.details)

    async def stream(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        await context.abort(self.code, self.details)
        yield b""  # never reached: it makes this a stream


def _refusing(
    service: ServiceDescriptor, refusal: Refusal, answers: Mapping[str, Message] | None = None
) -> ServiceRegistration:
    """Every method of `service` answers with `refusal` (requests are not even parsed), but those of
    `answers`, which answer what it gives them (a caller's step before the refused one)."""

    def answer(reply: Message) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            return reply.SerializeToString()

        return grpc.unary_unary_rpc_method_handler(unary)

    handlers = {
        method.name: grpc.unary_stream_rpc_method_handler(refusal.stream)
        if method.server_streaming
        else grpc.unary_unary_rpc_method_handler(refusal.unary)
        for method in service.methods
    }
    handlers.update({name: answer(reply) for name, reply in (answers or {}).items()})
    generic = grpc.method_handlers_generic_handler(service.full_name, handlers)
    return ServiceRegistration(service.full_name, lambda server: server.add_generic_rpc_handlers((generic,)))


@pytest.fixture
async def refusing(grpc_server: StartServer) -> tuple[Refusal, str]:
    """Topology, network and compute services that refuse every call with what the test sets; their
    address."""
    refusal = Refusal()
    services = [
        topology_pb2.DESCRIPTOR.services_by_name["MerakTopologyService"],
        network_pb2.DESCRIPTOR.services_by_name["MerakNetworkService"],
        compute_pb2.DESCRIPTOR.services_by_name["MerakComputeService"],
    ]
    return refusal, await grpc_server([_refusing(service, refusal) for service in services])


AGENT = agent_pb2.DESCRIPTOR.services_by_name["MerakAgentService"]
NETWORK_SERVICE = network_pb2.DESCRIPTOR.services_by_name["MerakNetworkService"]


def _expected(code: grpc.StatusCode) -> grpc.StatusCode:
    return grpc.StatusCode.UNAVAILABLE if code in TRANSPORT else code


def _agent_named(callee: str, address: str, code: grpc.StatusCode) -> str:
    """How a caller names an agent in its message: where it was called, when the transport failed."""
    return f"{callee} at {address}" if code in TRANSPORT else callee


# --- scenario -> topology, network, compute ------------------------------------------------------


@pytest.mark.parametrize("code", PASSED + TRANSPORT, ids=lambda c: c.name)
async def test_the_scenario_clients_pass_each_code_of_topology_network_and_compute(
    refusing: tuple[Refusal, str], code: grpc.StatusCode
) -> None:
    refusal, address = refusing
    refusal.code = code
    async with grpc.aio.insecure_channel(address) as channel:
        clients = ServiceClients(
            topology_pb2_grpc.MerakTopologyServiceStub(channel),
            network_pb2_grpc.MerakNetworkServiceStub(channel),
            compute_pb2_grpc.MerakComputeServiceStub(channel),
            timeout=0.5,  # UNAVAILABLE is asked again until then
            topology_address=address,
            network_address=address,
            compute_address=address,
        )

        async def watched() -> None:
            async for _progress in clients.compute_progress("c-1", timeout=5):
                pass

        calls: dict[str, list[Awaitable[object]]] = {
            "topology": [
                clients.topology(topology_pb2.InternalTopologyInfo(operation_type=common_pb2.INFO)),
                clients.topology_faults("ListFaults", topology_pb2.ListFaultsRequest(topology_id="t-1")),
                clients.topology_process_stats("t-1", 0.0),
            ],
            "network": [clients.network(network_pb2.InternalNetConfigInfo(operation_type=common_pb2.INFO))],
            "compute": [
                clients.compute(compute_pb2.InternalComputeConfigInfo(operation_type=common_pb2.INFO)),
                clients.compute_results("c-1"),
                watched(),
            ],
        }
        for service, made in calls.items():
            for call in made:
                with pytest.raises(ServiceError) as caught:
                    await call
                error = caught.value
                assert (error.code, error.callee_code) == (_expected(code), code), error.message
                where = f"{service} service at {address}" if code in TRANSPORT else f"{service} service"
                assert error.message == f"{where}: {WORDS}"


# --- scenario -> an agent (the connectivity test) -------------------------------------------------

PING = PingOptions(
    max_pairs=0, seed=1, timeout=0.2, retry=0.0, concurrency=4, listed_failures=10, pair_limit=100,
    call_timeout=10,
)  # fmt: skip
# What an agent that lists its VMs but refuses their pings says it holds.
LISTED = agent_pb2.ListVmsReply(
    dataplane="fake",
    vms=[agent_pb2.VmInfo(name=f"v0-0-{i}", ip=f"10.1.0.{i + 2}", vpc_id="vpc-1") for i in range(2)],
)


@pytest.mark.parametrize("code", PASSED + TRANSPORT, ids=lambda c: c.name)
async def test_the_connectivity_test_passes_each_code_of_an_agent(
    grpc_server: StartServer, code: grpc.StatusCode
) -> None:
    refusal = Refusal(code)
    refusing = await grpc_server([_refusing(AGENT, refusal)])
    listing = await grpc_server([_refusing(AGENT, refusal, {"ListVms": LISTED})])
    scenario = scenario_pb2.Scenario(id="s-1")

    def vhost(endpoint: str) -> list[common_pb2.InternalComputeInfo]:
        return [common_pb2.InternalComputeInfo(name="vhost-0", agent_endpoint=endpoint)]

    # An agent that will not list its VMs fails the test as a call: the scenario service answers
    # RunTest with the agent's code.
    with pytest.raises(ServiceError) as caught:
        await ConnectivityTest(PING).run(scenario, None, vhost(refusing))
    error = caught.value
    assert (error.code, error.callee_code) == (_expected(code), code), error.message
    callee = "agent of vhost 'vhost-0'"
    assert error.message == f"{_agent_named(callee, refusing, code)}: {WORDS}"
    # A refused ping fails its pairs, not the call: each pair's reason carries the agent's code.
    report = await ConnectivityTest(PING).run(scenario, None, vhost(listing))
    assert (report.pairs_tried, report.passed, report.failed) == (2, 0, 2)
    named = _agent_named(callee, listing, code)
    assert [f.reason for f in report.failures] == [f"{named}: {WORDS} ({code.name})"] * 2


def _small_lab() -> scenario_pb2.TopologyConfig:
    return topology_config(vhosts=2, racks=1, per_rack=2, ports=2, cidr="10.233.0.0/24", dataplane="fake")


@pytest.mark.root
async def test_the_scenario_service_passes_topology_and_network_refusals_as_they_are(stack: Stack) -> None:
    # The topology service refuses a lab whose id it holds with another configuration: ALREADY_EXISTS.
    created = await create_scenario(stack.stub, topology=_small_lab())
    sid = created.scenario.id
    taken = topology_pb2.InternalTopologyConfiguration(
        topology_id=created.topology.id, topology_type=topology_pb2.TREE, number_of_vhosts=3,
        vhost_per_rack=3, ports_per_vswitch=4, data_plane_cidr="10.231.0.0/24", dataplane="fake",
    )  # fmt: skip
    topology = stack.services.built["topology"].root
    await topology.create(taken)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await act(stack.stub, sid, TOPOLOGY, DEPLOY)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS, caught.value.details()
    assert (caught.value.details() or "").startswith(
        f"topology service: topology {created.topology.id!r} exists with a different configuration"
    )
    await topology.delete(created.topology.id)

    # A lab deployed for real; then the network service refuses a network config id it holds with
    # another configuration.
    created = await create_scenario(stack.stub, topology=_small_lab())
    sid = created.scenario.id
    await act(stack.stub, sid, TOPOLOGY, DEPLOY)
    assert (await watch(stack, sid))[-1].topology_status == scenario_pb2.READY
    other = network_pb2.InternalNetConfigConfiguration(netconfig_id=created.network.id)
    vpc = other.network.vpcs.add(tenant_id="123456789", project_id="123456789", vpc_cidr="10.9.0.0/16")
    vpc.subnets.add(subnet_cidr="10.9.0.0/16", subnet_gw="10.9.0.1", number_vms=5)
    async with grpc.aio.insecure_channel(stack.services.addresses["network"]) as channel:
        await network_pb2_grpc.MerakNetworkServiceStub(channel).NetConfigHandler(
            network_pb2.InternalNetConfigInfo(operation_type=common_pb2.CREATE, config=other)
        )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await act(stack.stub, sid, NETWORK, DEPLOY)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS, caught.value.details()
    assert (caught.value.details() or "").startswith(
        f"network service: network config {created.network.id!r} exists with a different configuration"
    )


# --- compute -> network, topology ----------------------------------------------------------------


def _compute_request(
    netconfig_id: str, vpc_id: str = "vpc-1", subnet_id: str = "subnet-1", topology_id: str = ""
) -> compute_pb2.InternalComputeConfigInfo:
    config = compute_pb2.InternalComputeConfiguration(
        compute_config_id=unique_name("cmp-"), netconfig_id=netconfig_id
    )
    config.pods.extend(
        common_pb2.InternalComputeInfo(
            name=f"vhost-{i}",
            agent_endpoint=f"unix:///nowhere/{i}",
            topology_id=topology_id,
            dataplane="fake",
        )
        for i in range(2)
    )
    config.vm_deploy.deploy_type = compute_pb2.UNIFORM
    vpc = config.vm_deploy.vpcs.add(vpc_id=vpc_id, project_id="123456789", tenant_id="123456789")
    vpc.subnets.add(subnet_id=subnet_id, number_vms=2)
    return compute_pb2.InternalComputeConfigInfo(operation_type=common_pb2.CREATE, config=config)


async def _refused(address: str, request: compute_pb2.InternalComputeConfigInfo) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await compute_pb2_grpc.MerakComputeServiceStub(channel).ComputeHandler(request)
    return caught.value


async def _real_network(services: ServiceStack) -> tuple[str, str, str]:
    """A network config in the real network service: its id, its VPC's id and its subnet's id."""
    netconfig_id = unique_name("net-")
    config = network_pb2.InternalNetConfigConfiguration(netconfig_id=netconfig_id)
    vpc = config.network.vpcs.add(tenant_id="123456789", project_id="123456789", vpc_cidr="10.1.0.0/16")
    vpc.subnets.add(subnet_cidr="10.1.0.0/16", subnet_gw="10.1.0.1", number_vms=50)
    async with grpc.aio.insecure_channel(services.addresses["network"]) as channel:
        reply = await network_pb2_grpc.MerakNetworkServiceStub(channel).NetConfigHandler(
            network_pb2.InternalNetConfigInfo(operation_type=common_pb2.CREATE, config=config)
        )
    return netconfig_id, reply.vpcs[0].vpc_id, reply.vpcs[0].subnets[0].subnet_id


async def test_compute_passes_the_real_network_and_topology_refusals(temporal_services: ServiceStack) -> None:
    services = temporal_services
    await services.topology()
    await services.network()
    await services.compute()
    compute = services.addresses["compute"]
    # The case: a network config id the network service refuses is INVALID_ARGUMENT, not
    # UNAVAILABLE (a client would retry it for ever).
    refused = await _refused(compute, _compute_request("bad id!"))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
    assert (refused.details() or "").startswith("network service: config.netconfig_id: "), refused.details()
    # Deliberate: a network config that does not exist is the caller's field, named as compute's.
    refused = await _refused(compute, _compute_request("net-404"))
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
    assert refused.details() == "config.netconfig_id: no network config 'net-404'"
    # A topology id the topology service refuses, when compute asks which agents it started.
    netconfig_id, vpc_id, subnet_id = await _real_network(services)
    refused = await _refused(
        compute, _compute_request(netconfig_id, vpc_id, subnet_id, topology_id="bad id!")
    )
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
    assert (refused.details() or "").startswith("topology service: config.topology_id: "), refused.details()
    assert await services.built["compute"].root.store.redis.keys("merak:compute:*") == []


async def test_compute_without_its_topology_service_is_unavailable(temporal_services: ServiceStack) -> None:
    services = temporal_services
    await services.network()
    nowhere = f"127.0.0.1:{free_port()}"
    await services.compute(topology_address=nowhere)
    netconfig_id, vpc_id, subnet_id = await _real_network(services)
    refused = await _refused(
        services.addresses["compute"], _compute_request(netconfig_id, vpc_id, subnet_id, "t-1")
    )
    assert refused.code() == grpc.StatusCode.UNAVAILABLE, refused.details()
    assert (refused.details() or "").startswith("topology service: "), refused.details()


@pytest.mark.parametrize("code", PASSED + TRANSPORT, ids=lambda c: c.name)
async def test_compute_passes_each_code_of_the_network_service(
    temporal_services: ServiceStack, refusing: tuple[Refusal, str], code: grpc.StatusCode
) -> None:
    refusal, address = refusing
    refusal.code = code
    services = temporal_services
    await services.network()  # the stack's wiring; compute is pointed at the refusing one
    await services.compute(network_address=address)
    refused = await _refused(services.addresses["compute"], _compute_request("net-1"))
    if code == grpc.StatusCode.NOT_FOUND:  # deliberate: the caller's field
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
        assert refused.details() == "config.netconfig_id: no network config 'net-1'"
    else:
        assert refused.code() == _expected(code), refused.details()
        assert refused.details() == f"network service: {WORDS}"


@pytest.mark.parametrize("code", PASSED + TRANSPORT, ids=lambda c: c.name)
async def test_compute_passes_each_code_of_the_topology_service(
    temporal_services: ServiceStack, refusing: tuple[Refusal, str], code: grpc.StatusCode
) -> None:
    refusal, address = refusing
    refusal.code = code
    services = temporal_services
    await services.network()
    await services.compute(topology_address=address)
    netconfig_id, vpc_id, subnet_id = await _real_network(services)
    request = _compute_request(netconfig_id, vpc_id, subnet_id, topology_id="t-1")
    refused = await _refused(services.addresses["compute"], request)
    if code == grpc.StatusCode.NOT_FOUND:  # deliberate: a topology gone issued no agent
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
        assert (refused.details() or "").startswith("config.pods[0].agent_endpoint: "), refused.details()
    else:
        assert refused.code() == _expected(code), refused.details()
        assert refused.details() == f"topology service: {WORDS}"


# --- the compute worker -> an agent --------------------------------------------------------------


async def test_an_agents_refusal_fails_the_activity_for_good_and_its_absence_is_retried(
    grpc_server: StartServer,
) -> None:
    servicer = AgentServicer(VhostSet.standalone())
    try:
        address = await grpc_server([registration(servicer)])
        for where, expected, permanent in (
            (address, "INVALID_ARGUMENT", True),
            (f"127.0.0.1:{free_port()}", "UNAVAILABLE", False),
        ):
            async with grpc.aio.insecure_channel(where) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as called:
                    await agent_pb2_grpc.MerakAgentServiceStub(channel).SetVpcPeers(
                        agent_pb2.SetVpcPeersRequest(vhost="local", vni=0), timeout=10
                    )
            with pytest.raises(ApplicationError) as caught:
                raise_activity_error(called.value, "agent SetVpcPeers on local")
            assert (caught.value.type, caught.value.non_retryable) == (expected, permanent)
            assert caught.value.message.startswith("agent SetVpcPeers on local"), caught.value.message
        assert caught.value.message.endswith("(UNAVAILABLE)")
    finally:
        await servicer.close()


def _vm(i: int) -> VmRecord:
    return VmRecord(
        id=f"vhost-0.v0-0-{i}", name=f"v0-0-{i}", host="vhost-0", vpc="vpc-1", subnet="subnet-1",
        project="123456789", tenant="123456789", cidr="10.1.0.0/16", gw="10.1.0.1",
    )  # fmt: skip


@pytest.mark.parametrize("code", PASSED + TRANSPORT, ids=lambda c: c.name)
async def test_the_worker_fails_a_batch_with_each_code_of_its_agent(
    grpc_server: StartServer, code: grpc.StatusCode
) -> None:
    # The native plugin's batch as the worker runs it: the network service gives the addresses, the
    # agent refuses the VMs. A refusal about the request is not retried; a transport failure is.
    todo = [_vm(0), _vm(1)]
    allocated = network_pb2.AllocatePortsReply(
        ports=[
            network_pb2.PortAllocation(
                vm_id=r.id,
                vpc_id=r.vpc,
                subnet_id=r.subnet,
                ip=f"10.1.0.{i + 2}",
                prefix_len=16,
                mac=f"02:00:00:00:00:0{i + 2}",
                gateway="10.1.0.1",
                vni=7,
                cidr=r.cidr,
            )
            for i, r in enumerate(todo)
        ]
    )
    network = await grpc_server([_refusing(NETWORK_SERVICE, Refusal(), {"AllocatePorts": allocated})])
    agent = await grpc_server([_refusing(AGENT, Refusal(code))])
    meta = Meta(
        operation="create", running=True, total=2, batch_size=2, shards=1, plugin="native",
        netconfig_id="net-1", alcor_url="", failure="", started_at=0.0, finished_at=0.0,
    )  # fmt: skip
    async with grpc.aio.insecure_channel(network) as to_network, grpc.aio.insecure_channel(agent) as to_agent:
        plugin = NativeVms(network_pb2_grpc.MerakNetworkServiceStub(to_network), agent_timeout=10)
        with pytest.raises(ApplicationError) as caught:
            await plugin.create(agent_pb2_grpc.MerakAgentServiceStub(to_agent), "vhost-0", meta, todo, [])
    failure = caught.value
    assert (failure.type, failure.non_retryable) == (_expected(code).name, code in PASSED), failure.message
    assert failure.message == f"agent CreateVms on vhost-0: {WORDS} ({code.name})"


# --- topology -> an agent (a healed ovn-controller) -----------------------------------------------


@pytest.mark.parametrize("code", PASSED + TRANSPORT, ids=lambda c: c.name)
async def test_topology_passes_each_code_of_an_agent_asked_to_restart_ovn_controller(
    grpc_server: StartServer, tmp_path: Path, code: grpc.StatusCode
) -> None:
    agent = await grpc_server([_refusing(AGENT, Refusal(code))])
    # A process that stands in for vhost-0's ovn-controller: its pid file where the lab keeps it, and
    # the program's name in its command line.
    chassis = tmp_path / "ovn" / "0"
    chassis.mkdir(parents=True)
    stand_in = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(300)", "ovn-controller"
    )
    # A child's command line is empty for a moment after exec has closed the pipe its parent waits on.
    await assert_eventually(lambda: is_ours(stand_in.pid, "ovn-controller"), message="the stand-in runs")
    (chassis / "ovn-controller.pid").write_text(f"{stand_in.pid}\n")
    faults = ProcessFaults(tmp_path / "stack")
    target, where, endpoints = "ovn-controller@vhost-0", {"vhost-0": 0}, {"vhost-0": agent}
    try:
        await faults.apply("t-1", tmp_path, where, endpoints, {target: topology_pb2.HOST_CRASHED})
        assert await asyncio.wait_for(stand_in.wait(), 10) == -signal.SIGKILL
        # The heal asks the vhost's agent to start it again (EnsureChassis), which refuses.
        with pytest.raises(ServiceError) as caught:
            await faults.apply("t-1", tmp_path, where, endpoints, {})
    finally:
        if stand_in.returncode is None:
            stand_in.kill()
            await stand_in.wait()
        await faults.close()
    error = caught.value
    assert (error.code, error.callee_code) == (_expected(code), code), error.message
    assert error.message == f"{_agent_named(f'{target}: restart through its agent', agent, code)}: {WORDS}"


# --- the agent names a bad VNI instead of failing INTERNAL ----------------------------------------


async def _check_vnis(stub: agent_pb2_grpc.MerakAgentServiceAsyncStub, vhost: str) -> None:
    for vni in (0, 1 << 24, (1 << 32) - 1):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SetVpcPeers(agent_pb2.SetVpcPeersRequest(vhost=vhost, vni=vni, vteps=["10.0.0.9"]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert caught.value.details() == f"vni: must be between 1 and 16777215, got {vni}"
        vpc = agent_pb2.VpcSpec(
            vpc_id="vpc-1", vni=vni, subnets=[agent_pb2.SubnetGateway(cidr="10.1.0.0/24", gateway="10.1.0.1")]
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CreateVms(agent_pb2.CreateVmsRequest(vhost=vhost, vpcs=[vpc]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert caught.value.details() == f"vpcs[0].vni: must be between 1 and 16777215, got {vni}"
    # Nothing was made or changed: the agent holds no VM, and a good VNI is still taken.
    assert not (await stub.ListVms(agent_pb2.ListVmsRequest(vhost=vhost))).vms
    reply = await stub.SetVpcPeers(agent_pb2.SetVpcPeersRequest(vhost=vhost, vni=7, neighbors_only=True))
    assert reply.vteps == 0


async def test_a_fake_agent_refuses_a_vni_out_of_range_naming_the_field(grpc_server: StartServer) -> None:
    servicer = AgentServicer(VhostSet.standalone())
    try:
        async with grpc.aio.insecure_channel(await grpc_server([registration(servicer)])) as channel:
            await _check_vnis(agent_pb2_grpc.MerakAgentServiceStub(channel), "local")
    finally:
        await servicer.close()


@pytest.mark.root
async def test_a_real_agent_refuses_a_vni_out_of_range_naming_the_field(services: ServiceStack) -> None:
    # The kernel's plane is where a bad VNI used to escape as a ValueError (INTERNAL).
    manager = await services.topology()
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id=unique_name("vni-"), topology_type=topology_pb2.TREE, number_of_vhosts=1,
        vhost_per_rack=1, ports_per_vswitch=2, data_plane_cidr="10.232.0.0/24",
    )  # fmt: skip
    await manager.create(config)

    async def ready() -> topology_pb2.ReturnTopologyMessage | None:
        info = await manager.info(config.topology_id)
        return info if all(n.status == common_pb2.READY for n in info.compute_nodes) else None

    info: topology_pb2.ReturnTopologyMessage = await assert_eventually(ready, timeout=60, message="lab")
    node = info.compute_nodes[0]
    async with grpc.aio.insecure_channel(node.agent_endpoint) as channel:
        await _check_vnis(agent_pb2_grpc.MerakAgentServiceStub(channel), node.name)
