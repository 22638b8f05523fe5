"""Agent in Alcor mode against a fake Alcor; the fake dataplane at scale; the standalone agent."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from merak.controlplane import ControlPlaneAllow
from merak.grpcclient import health_serving_blocking
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from merak_tools.alcor_standin import FailRule, FakeAlcor
from services.agent.alcor import AlcorPorts, port_id_for
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from tests.support import free_port
from tests.support.plugin import StartServer


@pytest.fixture
def alcor() -> Iterator[FakeAlcor]:
    fake = FakeAlcor()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
async def alcor_agent(
    grpc_server: StartServer, alcor: FakeAlcor
) -> AsyncIterator[agent_pb2_grpc.MerakAgentServiceAsyncStub]:
    # The fake dataplane keeps this test off the kernel; the Alcor calls are what is checked here.
    servicer = AgentServicer(VhostSet.standalone("vhost-0"), alcor=AlcorPorts(f"{alcor.url}"))
    address = await grpc_server([registration(servicer)])
    async with grpc.aio.insecure_channel(address) as channel:
        yield agent_pb2_grpc.MerakAgentServiceStub(channel)
    await servicer.close()


def port_request(op: common_pb2.OperationType.ValueType, **fields: str) -> agent_pb2.InternalPortConfig:
    base = dict(
        id="vmid-1", name="v000", vpcid="9192a4d4-ffff-4ece-b3f0-8d36e3d88000", tenantid="123456789",
        projectid="123456789", subnetid="8182a4d4-ffff-4ece-b3f0-8d36e3d88000", gw="10.0.0.1", sg="sg-1",
        cidr="10.0.0.0/16", hostname="vhost-0",
    )  # fmt: skip
    base.update(fields)
    request = agent_pb2.InternalPortConfig(operation_type=op)
    for name, value in base.items():
        setattr(request, name, value)
    return request


async def test_alcor_port_lifecycle_sends_merak_requests(
    alcor_agent: agent_pb2_grpc.MerakAgentServiceAsyncStub, alcor: FakeAlcor
) -> None:
    pre = await alcor_agent.PortHandler(port_request(common_pb2.PRECREATE))
    assert pre.return_code == common_pb2.OK
    port_id = pre.port.remoteid
    assert pre.port.ip == "10.0.0.2"
    assert pre.port.mac.startswith("aa:bb:cc")
    assert pre.port.deviceid == "tap" + port_id[:11]
    assert pre.port.status == common_pb2.DEPLOYING
    # The port id is the VM's (stable), so a retried create finds the port instead of making a second.
    assert port_id == port_id_for("", "vhost-0", "v000")
    first = alcor.state.requests[0]
    assert (first.method, first.path) == ("POST", "/project/123456789/ports")
    assert first.body == {
        "port": {
            "id": port_id,
            "admin_state_up": True,
            "device_id": "v000",
            "network_id": "9192a4d4-ffff-4ece-b3f0-8d36e3d88000",
            "security_groups": ["sg-1"],
            "fixed_ips": [{"subnet_id": "8182a4d4-ffff-4ece-b3f0-8d36e3d88000"}],
            "tenant_id": "123456789",
        }
    }

    create = await alcor_agent.PortHandler(
        port_request(
            common_pb2.CREATE, ip=pre.port.ip, mac=pre.port.mac, remoteid=port_id, deviceid=pre.port.deviceid
        )
    )
    assert create.return_code == common_pb2.OK, create.return_message
    assert create.port.status == common_pb2.DONE
    put = alcor.state.requests[1]
    assert (put.method, put.path) == ("PUT", f"/project/123456789/ports/{port_id}")
    assert put.body == {
        "port": {
            "project_id": "123456789",
            "id": port_id,
            "name": "v000",
            "description": "",
            "network_id": "9192a4d4-ffff-4ece-b3f0-8d36e3d88000",
            "tenant_id": "123456789",
            "admin_state_up": True,
            "veth_name": "inv000",
            "device_id": "v000",
            "device_owner": "compute:nova",
            "fast_path": True,
            "binding:host_id": "vhost-0",
        }
    }
    listed = await alcor_agent.ListVms(agent_pb2.ListVmsRequest(vhost="vhost-0"))
    assert [(v.name, v.ip, v.mac) for v in listed.vms] == [("v000", "10.0.0.2", pre.port.mac)]

    deleted = await alcor_agent.PortHandler(port_request(common_pb2.DELETE, remoteid=port_id))
    assert deleted.return_message == "Delete Success!"
    last = alcor.state.requests[2]
    assert (last.method, last.path, last.body) == ("DELETE", f"/project/123456789/ports/{port_id}", None)
    assert alcor.state.ports == {}
    assert (await alcor_agent.ListVms(agent_pb2.ListVmsRequest(vhost="vhost-0"))).vms == []


async def test_alcor_failures_are_retried_then_named(
    alcor_agent: agent_pb2_grpc.MerakAgentServiceAsyncStub, alcor: FakeAlcor
) -> None:
    # A 5xx is retried with backoff: one port in the end.
    alcor.state.fail_rules.append(FailRule("POST", "/ports", 500, "PortManagerBusy"))
    pre = await alcor_agent.PortHandler(port_request(common_pb2.PRECREATE))
    assert pre.return_code == common_pb2.OK and list(alcor.state.ports) == [pre.port.remoteid]
    # A retried PRECREATE (a retried activity) finds the port: still one, the same address.
    again = await alcor_agent.PortHandler(port_request(common_pb2.PRECREATE))
    assert (again.port.remoteid, again.port.ip) == (pre.port.remoteid, pre.port.ip)
    assert len(alcor.state.ports) == 1
    # Retries are bounded: a 5xx that lasts is UNAVAILABLE, naming the call and Alcor's answer.
    alcor.state.fail_rules.extend(FailRule("POST", "/ports", 503, "Down") for _ in range(4))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await alcor_agent.PortHandler(port_request(common_pb2.PRECREATE, name="v001"))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "alcor create_port (POST /project/123456789/ports) answered 503" in (caught.value.details() or "")
    # A 4xx is not retried.
    alcor.state.fail_rules.append(FailRule("POST", "/ports", 412, "NetworkIdRequired"))
    posts = sum(r.method == "POST" for r in alcor.state.requests)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await alcor_agent.PortHandler(port_request(common_pb2.PRECREATE, name="v002"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "answered 412" in (caught.value.details() or "")
    assert sum(r.method == "POST" for r in alcor.state.requests) == posts + 1


async def test_port_batch_handles_each_port_on_its_own(
    alcor_agent: agent_pb2_grpc.MerakAgentServiceAsyncStub, alcor: FakeAlcor
) -> None:
    names = ["v010", "v011", "v012"]
    # PRECREATE: one port lacks its subnet; the others get Alcor's ports, each with its own timed call.
    pre = await alcor_agent.PortHandlerBatch(
        agent_pb2.PortBatchRequest(
            ports=[
                port_request(common_pb2.PRECREATE, name=n, id=n, **({"subnetid": ""} if n == "v011" else {}))
                for n in names
            ]
        )
    )
    assert [r.code for r in pre.results] == ["OK", "INVALID_ARGUMENT", "OK"]
    assert "subnetid" in pre.results[1].message
    assert [[c.operation for c in r.calls] for r in pre.results] == [["create_port"], [], ["create_port"]]
    assert {pre.results[0].reply.port.remoteid, pre.results[2].reply.port.remoteid} == set(alcor.state.ports)
    # CREATE: Alcor refuses one bind (4xx, not retried); the other VM is made, both answered in order.
    alcor.state.fail_rules.append(FailRule("PUT", pre.results[2].reply.port.remoteid, 412, "PortBusy"))
    made = await alcor_agent.PortHandlerBatch(
        agent_pb2.PortBatchRequest(
            ports=[
                port_request(
                    common_pb2.CREATE,
                    name=n,
                    id=n,
                    ip=r.reply.port.ip,
                    mac=r.reply.port.mac,
                    remoteid=r.reply.port.remoteid,
                    deviceid=r.reply.port.deviceid,
                )
                for n, r in zip(names[::2], pre.results[::2], strict=True)
            ]
        )
    )
    assert [r.code for r in made.results] == ["OK", "FAILED_PRECONDITION"]
    assert "answered 412" in made.results[1].message and "bind_port" in made.results[1].message
    assert made.results[0].reply.port.status == common_pb2.DONE
    assert [(c.operation, c.code) for c in made.results[1].calls] == [("bind_port", "412")]
    listed = await alcor_agent.ListVms(agent_pb2.ListVmsRequest(vhost="vhost-0"))
    assert [v.name for v in listed.vms] == ["v010"]
    # One operation and one vhost per call; a mixed batch is refused as a whole, nothing done.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await alcor_agent.PortHandlerBatch(
            agent_pb2.PortBatchRequest(
                ports=[port_request(common_pb2.DELETE, name="v010"), port_request(common_pb2.PRECREATE)]
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ports[1].operation_type" in (caught.value.details() or "")
    assert [v.name for v in (await alcor_agent.ListVms(agent_pb2.ListVmsRequest(vhost="vhost-0"))).vms] == [
        "v010"
    ]


async def test_create_needs_the_precreated_port(
    alcor_agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await alcor_agent.PortHandler(port_request(common_pb2.CREATE, ip="10.0.0.2", mac="aa:bb:cc:00:00:02"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (caught.value.details() or "").startswith("remoteid")


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def standalone_agent() -> Iterator[tuple[int, int]]:
    """A standalone agent process (one fake vhost "local"); yields (port, pid)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as state:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.agent", "--grpc_port", str(port), "--host", "127.0.0.1",
             "--metrics_port", "-1", "--state_dir", state],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while not health_serving_blocking(f"127.0.0.1:{port}"):
                assert proc.poll() is None and time.monotonic() < deadline, "agent did not start"
                time.sleep(0.05)
            yield port, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def fake_vms(batch: int) -> list[agent_pb2.VmSpec]:
    """10,000 distinct VMs in 10.<batch>.0.0/16."""
    return [
        agent_pb2.VmSpec(
            name=f"v{batch}-{i}",
            vpc_id="vpc-1",
            vni=100,
            ip=f"10.{batch}.{i // 250}.{i % 250 + 2}",
            prefix_len=8,
            mac=f"02:00:{batch:02x}:00:{i // 256 % 256:02x}:{i % 256:02x}",
            gateway="10.0.0.1",
        )
        for i in range(10_000)
    ]


@pytest.mark.slow
async def test_fake_agent_holds_100k_vms_under_1_gib(standalone_agent: tuple[int, int]) -> None:
    port, pid = standalone_agent
    subnet = agent_pb2.SubnetGateway(cidr="10.0.0.0/8", gateway="10.0.0.1")
    vpc = agent_pb2.VpcSpec(vpc_id="vpc-1", vni=100, subnets=[subnet])
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        stub = agent_pb2_grpc.MerakAgentServiceStub(channel)
        for batch in range(10):
            reply = await stub.CreateVms(
                agent_pb2.CreateVmsRequest(vhost="local", vpcs=[vpc], vms=fake_vms(batch))
            )
            assert reply.created == 10_000
        listed = await stub.ListVms(agent_pb2.ListVmsRequest(vhost="local"))
        assert len(listed.vms) == 100_000
        assert listed.dataplane == "fake"
    rss = _rss_bytes(pid)
    assert rss < 1024**3, f"RSS {rss / 1024**2:.0f} MiB"


async def test_each_port_request_goes_to_the_alcor_it_names(grpc_server: StartServer) -> None:
    # No process-wide Alcor: two scenarios' VMs on one agent reach two different Alcors.
    first, second = FakeAlcor(), FakeAlcor()
    servicer = AgentServicer(
        VhostSet.standalone("vhost-0"),
        control_plane=ControlPlaneAllow.parse(f"{first.allow_entries},{second.allow_entries}"),
    )
    try:
        address = await grpc_server([registration(servicer)])
        async with grpc.aio.insecure_channel(address) as channel:
            agent = agent_pb2_grpc.MerakAgentServiceStub(channel)
            one = await agent.PortHandler(
                port_request(common_pb2.PRECREATE, name="v000", alcor_url=first.url)
            )
            two = await agent.PortHandler(
                port_request(common_pb2.PRECREATE, name="v001", alcor_url=second.url)
            )
            assert list(first.state.ports) == [one.port.remoteid]
            assert list(second.state.ports) == [two.port.remoteid]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await agent.PortHandler(
                    port_request(common_pb2.PRECREATE, name="v002", alcor_url="file:///etc/passwd")
                )
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (caught.value.details() or "").startswith("alcor_url: ")
    finally:
        await servicer.close()
        first.stop()
        second.stop()
