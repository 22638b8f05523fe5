"""Redis (every service's state store) going away and coming back: calls made while it is down
answer UNAVAILABLE naming it, and the first call after it is back succeeds (no stale connection)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from merak.v1 import common_pb2, network_pb2, network_pb2_grpc
from tests.stack import service_stack
from tests.support import free_port
from tests.support.plugin import RedisProcess, ServeBuilt


async def _info(stub: network_pb2_grpc.MerakNetworkServiceAsyncStub) -> grpc.StatusCode:
    request = network_pb2.InternalNetConfigInfo(
        operation_type=common_pb2.INFO, config=network_pb2.InternalNetConfigConfiguration(netconfig_id="nc-x")
    )
    try:
        await stub.NetConfigHandler(request, timeout=20)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            assert "redis" in (exc.details() or ""), exc.details()
        return exc.code()
    return grpc.StatusCode.OK


async def test_calls_while_redis_is_down_are_unavailable_and_heal_when_it_is_back(
    serve_built: ServeBuilt, tmp_path: Path
) -> None:
    server = RedisProcess(free_port(), tmp_path)
    server.start()
    try:
        async with service_stack(serve_built, server.url) as stack:
            await stack.network()
            async with grpc.aio.insecure_channel(stack.addresses["network"]) as channel:
                stub = network_pb2_grpc.MerakNetworkServiceStub(channel)
                for _ in range(3):  # several pooled connections in use
                    assert await _info(stub) == grpc.StatusCode.NOT_FOUND
                server.stop()
                server.start()  # a restart nobody called during: the pooled connections are dead
                for _ in range(3):  # was INTERNAL "Connection closed by server."
                    assert await _info(stub) == grpc.StatusCode.NOT_FOUND
                server.stop()
                assert await _info(stub) == grpc.StatusCode.UNAVAILABLE  # was INTERNAL "ConnectionError"
                assert await _info(stub) == grpc.StatusCode.UNAVAILABLE
                server.start()
                for _ in range(3):
                    assert await _info(stub) == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()


pytestmark = pytest.mark.slow
