"""Issue #28's SSRF probe: a request names a loopback port that is not a control plane, as its Alcor or
its OVN. Unless the operator allowed it (MERAK_CONTROL_PLANE_ALLOW), the network service, compute and
the agent (an Alcor URL, or the southbound database of a chassis) refuse it with INVALID_ARGUMENT naming
the field before anything is made and before a byte is sent there; once allowed, what it answers (a
secret in its status line and body; an OVSDB server's error details) never reaches a caller, only its
status or its error's name does, the text going to the service's log."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from merak import ovs
from merak.controlplane import ControlPlaneAllow
from merak.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    common_pb2,
    compute_pb2,
    compute_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
)
from merak_tools.ovncentral import RunningCentral
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from services.network.app import build
from services.network.config import NetworkSettings
from tests.integration import ovn_net
from tests.stack import ServiceStack
from tests.support import unique_name
from tests.support.leaky import LeakyListener
from tests.support.plugin import ServeBuilt, StartServer

REFUSED = "is not an allowed control-plane endpoint (MERAK_CONTROL_PLANE_ALLOW)"
# Every word of the listener's answer that must never come back.
LEAKED = ("INTERNAL-ONLY-DATA", "db_password", "secret")


@pytest.fixture
def leaky() -> Iterator[LeakyListener]:
    with LeakyListener() as listener:
        yield listener


def _clean(text: str) -> None:
    assert not any(word in text for word in LEAKED), text


async def _refusal(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]  # a grpc.aio call object
    return caught.value.code(), caught.value.details() or ""


# --- the network service ------------------------------------------------------------------------


async def _network(
    serve_built: ServeBuilt, redis_url: str, allow: str
) -> network_pb2_grpc.MerakNetworkServiceStub:
    settings = NetworkSettings(
        host="127.0.0.1", grpc_port=0, redis_url=redis_url, alcor_timeout=5.0, control_plane_allow=allow
    )
    address = await serve_built(await build(settings))
    return network_pb2_grpc.MerakNetworkServiceStub(grpc.aio.insecure_channel(address))


def _alcor_config(url: str) -> network_pb2.InternalNetConfigInfo:
    config = network_pb2.InternalNetConfigConfiguration(netconfig_id=unique_name("net-"), plugin="alcor")
    config.services.add(id="1", name="alcorIp", cmd="alcorIp", url=url, where_to_run="NETWORK")
    vpc = config.network.vpcs.add(tenant_id="t", project_id="p", vpc_cidr="10.1.0.0/16")
    vpc.subnets.add(subnet_cidr="10.1.0.0/24", number_vms=10)
    return network_pb2.InternalNetConfigInfo(operation_type=common_pb2.CREATE, config=config)


def _ovn_config(ovn_nb: str = "", ovn_sb: str = "") -> network_pb2.InternalNetConfigInfo:
    config = network_pb2.InternalNetConfigConfiguration(
        netconfig_id=unique_name("net-"), plugin="ovn", ovn_nb=ovn_nb, ovn_sb=ovn_sb
    )
    vpc = config.network.vpcs.add(tenant_id="t", project_id="p", vpc_cidr="10.1.0.0/16")
    vpc.subnets.add(subnet_cidr="10.1.0.0/24", number_vms=10)
    return network_pb2.InternalNetConfigInfo(operation_type=common_pb2.CREATE, config=config)


async def test_the_network_service_refuses_an_alcor_or_ovn_it_was_not_allowed(
    serve_built: ServeBuilt, redis_url: str, redis_client: aioredis.Redis, leaky: LeakyListener
) -> None:
    stub = await _network(serve_built, redis_url, "127.0.0.1:30001-30008")
    # A URL with a port sends every Alcor call there; one without uses Alcor's NodePorts (allowed here).
    code, details = await _refusal(stub.NetConfigHandler(_alcor_config(f"{leaky.url}/pm")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == f"config.services[0].url: 127.0.0.1:{leaky.port} {REFUSED}"
    for remotes, field, shown in (
        ({"ovn_nb": f"tcp:127.0.0.1:{leaky.port}"}, "config.ovn_nb", f"127.0.0.1:{leaky.port}"),
        ({"ovn_nb": "unix:/run/docker.sock"}, "config.ovn_nb", "unix:/run/docker.sock"),
        ({"ovn_sb": f"ssl:127.0.0.1:{leaky.port}"}, "config.ovn_sb", f"127.0.0.1:{leaky.port}"),
    ):
        code, details = await _refusal(stub.NetConfigHandler(_ovn_config(**remotes)))
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {shown} {REFUSED}")
    assert leaky.reached == 0 and leaky.requests == []
    assert await redis_client.keys("merak:network:*") == []


async def test_an_allowed_alcors_error_reply_is_never_repeated(
    serve_built: ServeBuilt, redis_url: str, redis_client: aioredis.Redis, leaky: LeakyListener
) -> None:
    stub = await _network(serve_built, redis_url, f"127.0.0.1:{leaky.port}")
    code, details = await _refusal(stub.NetConfigHandler(_alcor_config(leaky.url)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.endswith(" answered 400"), details  # its status; no Alcor error code in that body
    _clean(details)
    assert leaky.requests  # it was called: the refusal above was the operator's list, not luck
    assert await redis_client.keys("merak:network:*") == []


# --- the agent ----------------------------------------------------------------------------------


def _port(
    op: common_pb2.OperationType.ValueType, url: str, name: str = "v000"
) -> agent_pb2.InternalPortConfig:
    return agent_pb2.InternalPortConfig(
        operation_type=op, id=f"vm-{name}", name=name, vpcid="vpc-1", tenantid="t", projectid="p",
        subnetid="subnet-1", gw="10.0.0.1", cidr="10.0.0.0/16", hostname="vhost-0", alcor_url=url,
    )  # fmt: skip


async def test_the_agent_calls_only_allowed_alcors_and_never_repeats_their_words(
    grpc_server: StartServer, leaky: LeakyListener
) -> None:
    # Compute checks the URL first; the agent checks again (anything that reaches its socket can call it).
    refusing = AgentServicer(VhostSet.standalone("vhost-0"))
    allowing = AgentServicer(
        VhostSet.standalone("vhost-0"), control_plane=ControlPlaneAllow.parse(f"127.0.0.1:{leaky.port}")
    )
    try:
        async with grpc.aio.insecure_channel(await grpc_server([registration(refusing)])) as channel:
            agent = agent_pb2_grpc.MerakAgentServiceStub(channel)
            code, details = await _refusal(agent.PortHandler(_port(common_pb2.PRECREATE, f"{leaky.url}/pm")))
            assert (code, details) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                f"alcor_url: 127.0.0.1:{leaky.port} {REFUSED}",
            )
            assert leaky.reached == 0

        async with grpc.aio.insecure_channel(await grpc_server([registration(allowing)])) as channel:
            agent = agent_pb2_grpc.MerakAgentServiceStub(channel)
            code, details = await _refusal(agent.PortHandler(_port(common_pb2.PRECREATE, f"{leaky.url}/pm")))
            assert code == grpc.StatusCode.FAILED_PRECONDITION and details.endswith(" answered 400"), details
            _clean(details)
            batch = await agent.PortHandlerBatch(
                agent_pb2.PortBatchRequest(
                    ports=[_port(common_pb2.PRECREATE, f"{leaky.url}/pm", f"v00{i}") for i in range(3)]
                )
            )
            _clean(str(batch))
            assert len(batch.results) == 3 and all(" answered 400" in str(r) for r in batch.results), batch
            assert leaky.requests
    finally:
        await refusing.close()
        await allowing.close()


async def _chassis_refusal(
    grpc_server: StartServer, servicer: AgentServicer, sb_remote: str
) -> tuple[grpc.StatusCode, str]:
    async with grpc.aio.insecure_channel(await grpc_server([registration(servicer)])) as channel:
        agent = agent_pb2_grpc.MerakAgentServiceStub(channel)
        return await _refusal(agent.EnsureChassis(agent_pb2.EnsureChassisRequest(sb_remote=sb_remote)))


def _sb_chassis(central: RunningCentral) -> str:
    return subprocess.run(
        [ovs.program("ovn-sbctl"), f"--db={central.sb}", "--bare", "--columns=name", "list", "Chassis"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip


async def test_the_agent_makes_no_chassis_of_a_southbound_it_was_not_allowed(
    grpc_server: StartServer, leaky: LeakyListener, ovn_central: RunningCentral, tmp_path: Path
) -> None:
    # ovn-controller would connect wherever sb_remote says: a real SB of this machine that the operator
    # did not list, the leaky port, a unix socket that is no OVSDB's.
    servicer = AgentServicer(
        VhostSet.standalone("vhost-0"),
        chassis_dir=tmp_path / "chassis",
        control_plane=ControlPlaneAllow.parse("127.0.0.1:30001-30008,unix:/run/ovn/ovnsb_db.sock"),
    )
    try:
        for sb_remote, shown in (
            (ovn_central.sb, ovn_central.sb),
            (f"tcp:127.0.0.1:{leaky.port}", f"127.0.0.1:{leaky.port}"),
            ("unix:/run/docker.sock", "unix:/run/docker.sock"),
        ):
            code, details = await _chassis_refusal(grpc_server, servicer, sb_remote)
            assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, f"sb_remote: {shown} {REFUSED}")
    finally:
        await servicer.close()
    assert os.listdir(tmp_path) == []  # no chassis directory, so no process either
    assert _sb_chassis(ovn_central) == ""
    assert leaky.reached == 0


async def test_the_agent_never_repeats_what_a_southbound_answered(
    grpc_server: StartServer, ovn_nb: RunningCentral, tmp_path: Path
) -> None:
    # Allowed, but an NB where the SB should be: its error reply names the database it has not; that
    # text is logged, and the caller gets the error's name (one of OVSDB's) only.
    servicer = AgentServicer(
        VhostSet.standalone("vhost-0"),
        chassis_dir=tmp_path / "chassis",
        control_plane=ControlPlaneAllow.parse(ovn_nb.nb),
    )
    try:
        with capture_logs() as logs:
            code, details = await _chassis_refusal(grpc_server, servicer, ovn_nb.nb)
    finally:
        await servicer.close()
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"sb_remote: {ovn_nb.nb} is not an OVN southbound database "
        "(reading its Chassis table: unknown database)",
    )
    [logged] = [line for line in logs if line["event"] == "chassis_sb_error_reply"]
    assert "specifies unknown database OVN_Southbound" in logged["error"], logged
    assert os.listdir(tmp_path) == []


# --- the network service's OVN ------------------------------------------------------------------


def _read_only(central: RunningCentral) -> None:
    """The NB ovsdb-server as a backup of an active server that does not exist: it serves its data, and
    refuses every write with an error whose details say why."""
    control = str(central.central.root.absolute() / "ovnnb_db.ctl")
    for command in (
        ("ovsdb-server/set-active-ovsdb-server", f"unix:{central.central.root.absolute()}/nowhere.sock"),
        ("ovsdb-server/connect-active-ovsdb-server",),
    ):
        subprocess.run([ovs.program("ovs-appctl"), "-t", control, *command], check=True, timeout=30)


async def _ovn_refusal(
    net: ovn_net.Net, nb: str, sb: str, event: str
) -> tuple[grpc.StatusCode, str, MutableMapping[str, Any]]:
    """The code and details of a CREATE on `nb` that fails, and the one line logged as `event`."""
    config = ovn_net.config(unique_name("nc-"), nb=nb, sb=sb)
    with capture_logs() as logs:
        code, details = await _refusal(net.stub.NetConfigHandler(ovn_net.op(common_pb2.CREATE, config)))
    [logged] = [line for line in logs if line["event"] == event]
    return code, details, logged


async def test_the_network_service_never_repeats_what_an_ovn_database_answered(
    serve_built: ServeBuilt, redis_url: str, ovn_central: RunningCentral
) -> None:
    net = await ovn_net.serve(serve_built, redis_url, ovn=ovn_central)
    # An SB where the NB should be: no schema of that name (its reply says so in its own words).
    code, details, logged = await _ovn_refusal(net, ovn_central.sb, ovn_central.sb, "ovsdb_error_reply")
    assert (code, details) == (
        grpc.StatusCode.UNAVAILABLE,
        f"OVN northbound database {ovn_central.sb} is unreachable: the server has no OVN_Northbound database",
    )
    assert "unknown database" in logged["error"], logged
    # A transaction the NB refuses (read only): the error's name, not its details.
    _read_only(ovn_central)
    code, details, logged = await _ovn_refusal(net, ovn_central.nb, ovn_central.sb, "ovsdb_error")
    assert (code, details) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"OVN northbound database {ovn_central.nb}: the transaction failed (not allowed)",
    )
    assert "read only mode" in logged["error"] and logged["kind"] == "not allowed", logged


# --- compute ------------------------------------------------------------------------------------


def _compute_request(url: str) -> compute_pb2.InternalComputeConfigInfo:
    config = compute_pb2.InternalComputeConfiguration(
        compute_config_id=unique_name("cmp-"), plugin="alcor", alcor_url=url
    )
    config.pods.add(name="vhost-0", agent_endpoint="unix:///nowhere/0", dataplane="fake")
    config.vm_deploy.deploy_type = compute_pb2.UNIFORM
    vpc = config.vm_deploy.vpcs.add(vpc_id="vpc-1", project_id="p", tenant_id="t")
    vpc.subnets.add(subnet_id="subnet-1", number_vms=2)
    return compute_pb2.InternalComputeConfigInfo(operation_type=common_pb2.CREATE, config=config)


async def test_compute_refuses_an_alcor_it_was_not_allowed_before_anything_is_made(
    temporal_services: ServiceStack, leaky: LeakyListener
) -> None:
    services = temporal_services
    await services.topology()
    await services.network()
    manager = await services.compute(control_plane_allow="127.0.0.1:30006")
    async with grpc.aio.insecure_channel(services.addresses["compute"]) as channel:
        compute = compute_pb2_grpc.MerakComputeServiceStub(channel)
        code, details = await _refusal(compute.ComputeHandler(_compute_request(f"{leaky.url}/pm")))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == f"config.alcor_url: 127.0.0.1:{leaky.port} {REFUSED}"
        # The usual address of an Alcor's port manager, on another host: not listed either.
        code, details = await _refusal(compute.ComputeHandler(_compute_request("http://10.0.0.5:30006")))
        assert (code, details) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"config.alcor_url: 10.0.0.5:30006 {REFUSED}",
        )
    assert leaky.reached == 0
    assert await manager.store.redis.keys("merak:compute:*") == []
