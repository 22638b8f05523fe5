"""Fixtures every test folder shares: the emulator's services, built and served in the test process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

# The fixtures with real parts (Redis, Temporal, gRPC servers, namespaces) every test folder uses,
# with pytest's assertion messages (registered before anything imports them).
pytest.register_assert_rewrite("tests.support")
pytest_plugins = ["tests.support.plugin", "tests.support.ovn"]

from temporalio.testing import WorkflowEnvironment  # noqa: E402

from tests.stack import ServiceStack, service_stack  # noqa: E402
from tests.support.plugin import ServeBuilt  # noqa: E402


@pytest.fixture
async def services(serve_built: ServeBuilt, redis_url: str) -> AsyncIterator[ServiceStack]:
    """Topology, network and scenario services on demand (no Temporal: no compute)."""
    async with service_stack(serve_built, redis_url) as stack:
        yield stack


@pytest.fixture
async def temporal_services(
    serve_built: ServeBuilt, redis_url: str, temporal_env: WorkflowEnvironment
) -> AsyncIterator[ServiceStack]:
    """Every service on demand, compute and its workers on the test's Temporal dev server included."""
    async with service_stack(serve_built, redis_url, temporal_env.client) as stack:
        yield stack
