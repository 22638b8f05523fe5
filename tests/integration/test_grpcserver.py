"""The gRPC bootstrap: error mapping, health, reflection, metrics and the per-RPC log line."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from merak.errors import InvalidArgument, NotFound
from merak.grpcclient import MAX_REQUEST_BYTES, open_channel
from merak.grpcserver import GrpcServer, ServiceRegistration
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from services.agent.server import AgentServicer, registration
from services.agent.vhosts import VhostSet
from tests.support import assert_eventually


class ScriptedAgent(AgentServicer):
    """An agent whose PortHandler fails as the request's name says."""

    async def PortHandler(
        self, request: agent_pb2.InternalPortConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnInfo:
        if request.name == "bad":
            raise InvalidArgument("name", "must not be 'bad'")
        if request.name == "missing":
            raise NotFound("vm 'missing' does not exist")
        if request.name == "boom":
            raise RuntimeError("unexpected")
        if request.name == "abort":
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no")
        return agent_pb2.AgentReturnInfo(return_code=common_pb2.OK, return_message=request.name)

    async def BulkPortAdd(
        self, request: agent_pb2.BulkPorts, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnInfo:
        raise NotImplementedError("BulkPortAdd is not here")


@pytest.fixture
def registry() -> CollectorRegistry:
    """The metrics of the test's server (a process's own registry)."""
    return CollectorRegistry()


@pytest.fixture
async def agent_stub(registry: CollectorRegistry) -> AsyncIterator[agent_pb2_grpc.MerakAgentServiceAsyncStub]:
    server = GrpcServer("127.0.0.1:0", [registration(ScriptedAgent(VhostSet.standalone()))], registry)
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield agent_pb2_grpc.MerakAgentServiceStub(channel)
    finally:
        await server.stop(0)


def _handled(registry: CollectorRegistry, method: str, code: str) -> float:
    value = registry.get_sample_value(
        "merak_grpc_server_handled_total",
        {"grpc_service": "agent.MerakAgentService", "grpc_method": method, "grpc_code": code},
    )
    return value or 0.0


@pytest.mark.parametrize(
    ("name", "code", "details"),
    [
        ("bad", grpc.StatusCode.INVALID_ARGUMENT, "name: must not be 'bad'"),
        ("missing", grpc.StatusCode.NOT_FOUND, "vm 'missing' does not exist"),
        ("boom", grpc.StatusCode.INTERNAL, "internal error: RuntimeError"),
        ("abort", grpc.StatusCode.PERMISSION_DENIED, "no"),
    ],
)
async def test_errors_become_status_codes(
    agent_stub: agent_pb2_grpc.MerakAgentServiceAsyncStub,
    registry: CollectorRegistry,
    name: str,
    code: grpc.StatusCode,
    details: str,
) -> None:
    before = _handled(registry, "PortHandler", code.name)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_stub.PortHandler(agent_pb2.InternalPortConfig(name=name))
    assert caught.value.code() == code
    assert caught.value.details() == details
    # A handler's own context.abort() sends the status before the interceptor can count it.
    await assert_eventually(lambda: _handled(registry, "PortHandler", code.name) == before + 1, timeout=5)


async def test_unexpected_error_logs_one_traceback(
    agent_stub: agent_pb2_grpc.MerakAgentServiceAsyncStub,
) -> None:
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError):
        await agent_stub.PortHandler(agent_pb2.InternalPortConfig(name="boom"))
    errors = [entry for entry in logs if entry["event"] == "rpc_unexpected_error"]
    assert len(errors) == 1
    assert errors[0]["exc_info"] is True
    rpc_lines = [entry for entry in logs if entry["event"] == "rpc"]
    assert [line["grpc_code"] for line in rpc_lines] == ["INTERNAL"]


async def test_one_log_line_per_rpc(agent_stub: agent_pb2_grpc.MerakAgentServiceAsyncStub) -> None:
    with capture_logs() as logs:
        reply = await agent_stub.PortHandler(agent_pb2.InternalPortConfig(name="ok"))
    assert reply.return_message == "ok"
    lines = [entry for entry in logs if entry["event"] == "rpc"]
    assert len(lines) == 1
    assert lines[0]["grpc_method"] == "PortHandler"
    assert lines[0]["grpc_code"] == "OK"
    assert lines[0]["duration_ms"] >= 0


async def test_not_implemented_becomes_unimplemented(
    agent_stub: agent_pb2_grpc.MerakAgentServiceAsyncStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_stub.BulkPortAdd(agent_pb2.BulkPorts())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.details() == "BulkPortAdd is not here"


async def test_health_and_reflection() -> None:
    server = GrpcServer("127.0.0.1:0", [registration(AgentServicer(VhostSet.standalone()))])
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "agent.MerakAgentService"):
                reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = reflect.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = {s.name async for r in responses for s in r.list_services_response.service}
            assert names == {
                "agent.MerakAgentService",
                "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection",
            }
            await server.set_serving(False)
            reply = await health.Check(health_pb2.HealthCheckRequest(service="agent.MerakAgentService"))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.stop(0)


async def test_port_in_use_is_an_error() -> None:
    first = GrpcServer("127.0.0.1:0", [registration(AgentServicer(VhostSet.standalone()))])
    port = await first.start()
    try:
        second = GrpcServer(f"127.0.0.1:{port}", [registration(AgentServicer(VhostSet.standalone()))])
        with pytest.raises(RuntimeError):
            await second.start()
    finally:
        await first.stop(0)


def test_registrations_name_real_services() -> None:
    registrations: list[ServiceRegistration] = [registration(AgentServicer(VhostSet.standalone()))]
    assert registrations[0].name == agent_pb2.DESCRIPTOR.services_by_name["MerakAgentService"].full_name


async def test_a_request_over_the_size_limit_is_refused_before_it_is_read(
    registry: CollectorRegistry,
) -> None:
    # Merak's 500 MiB applies to replies; a server reads at most MAX_REQUEST_BYTES of a request.
    server = GrpcServer("127.0.0.1:0", [registration(ScriptedAgent(VhostSet.standalone()))], registry)
    port = await server.start()
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = agent_pb2_grpc.MerakAgentServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PortHandler(agent_pb2.InternalPortConfig(name="x" * (MAX_REQUEST_BYTES + 1)))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
            # Under the limit: read and handled (the scripted agent answers any other name).
            reply = await stub.PortHandler(agent_pb2.InternalPortConfig(name="x" * (MAX_REQUEST_BYTES - 100)))
            assert reply.return_code == common_pb2.OK
    finally:
        await server.stop(0)
