"""Fixtures of the scenario tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis

from merak.v1 import scenario_pb2_grpc
from tests.integration.scenario_lab import Stack
from tests.stack import ServiceStack


@pytest.fixture
async def stack(temporal_services: ServiceStack, redis_client: aioredis.Redis) -> AsyncIterator[Stack]:
    services = temporal_services
    await services.everything(teardown_timeout=60, watch_interval=0.2, test_retry=5)
    async with grpc.aio.insecure_channel(services.addresses["scenario"]) as channel:
        yield Stack(
            scenario_pb2_grpc.MerakScenarioServiceStub(channel), redis_client, services.run_dir, services
        )
