"""The one lifecycle of every process (merak.service): teardown order, a build failing halfway, a main
task, a failing start — each ends with everything that was opened closed, newest first."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from temporalio.testing import WorkflowEnvironment

from merak.config import ServiceSettings
from merak.grpcclient import health_serving
from merak.grpcserver import GrpcServer
from merak.service import BuiltProcess, BuiltService, Teardown, serve
from tests.support import assert_eventually, free_port
from tests.support.plugin import TEST_NAMESPACE


async def test_teardown_closes_newest_first_and_runs_every_step() -> None:
    closed: list[str] = []
    teardown = Teardown("test")

    async def close(name: str) -> None:
        closed.append(name)
        if name == "b":
            raise RuntimeError("b fails to close")

    for name in ("a", "b", "c"):
        teardown.add(lambda name=name: close(name))  # type: ignore[misc]
    teardown.add_sync(lambda: closed.append("d"))
    await teardown.run()
    assert closed == ["d", "c", "b", "a"]
    await teardown.run()  # once only
    assert closed == ["d", "c", "b", "a"]


async def test_a_build_failing_halfway_closes_what_it_opened() -> None:
    closed: list[str] = []
    teardown = Teardown("test")

    async def close_redis() -> None:
        closed.append("redis")

    with pytest.raises(ConnectionError, match="temporal"):
        async with teardown.on_error():
            teardown.add(close_redis)
            raise ConnectionError("temporal is unreachable")
    assert closed == ["redis"]


def _settings() -> ServiceSettings:
    return ServiceSettings(host="127.0.0.1", metrics_port=-1, shutdown_grace=0.1)


async def test_a_main_task_that_ends_stops_the_process_and_tears_down() -> None:
    closed: list[str] = []
    teardown = Teardown("worker")

    async def close() -> None:
        closed.append("client")

    teardown.add(close)

    async def main(stop: asyncio.Event) -> None:
        assert not stop.is_set()

    await asyncio.wait_for(
        serve(BuiltProcess(name="worker", root=None, teardown=teardown, main=main), _settings()), 10
    )
    assert closed == ["client"]


async def test_sigterm_stops_the_main_task_then_the_server_then_the_teardown() -> None:
    events: list[str] = []
    teardown = Teardown("svc")

    async def close() -> None:
        events.append("teardown")

    teardown.add(close)
    server = GrpcServer("127.0.0.1:0", [])

    async def main(stop: asyncio.Event) -> None:
        await stop.wait()
        events.append("main stopped")

    built = BuiltService(name="svc", server=server, root=None, teardown=teardown, main=main)
    running = asyncio.create_task(serve(built, _settings()))

    async def serving() -> bool | None:
        return bool(server.port) and await health_serving(f"127.0.0.1:{server.port}")

    up: bool = await assert_eventually(serving)
    assert up
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(running, 10)
    assert events == ["main stopped", "teardown"]
    assert not await health_serving(f"127.0.0.1:{server.port}", timeout=0.5)


async def test_a_failing_start_still_stops_the_server_and_tears_down() -> None:
    closed: list[str] = []
    teardown = Teardown("svc")

    async def close() -> None:
        closed.append("redis")

    teardown.add(close)
    server = GrpcServer("127.0.0.1:0", [])

    async def started() -> None:
        raise OSError("the REST port is taken")

    built = BuiltService(name="svc", server=server, root=None, teardown=teardown, on_started=started)
    with pytest.raises(OSError, match="REST port"):
        await serve(built, _settings())
    assert closed == ["redis"]
    assert not await health_serving(f"127.0.0.1:{server.port}", timeout=0.5)


def test_the_worker_process_serves_metrics_and_stops_cleanly_on_sigterm(
    redis_url: str, temporal_env: WorkflowEnvironment
) -> None:
    metrics_port = free_port()
    target = temporal_env.client.service_client.config.target_host
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.compute.worker", "--worker_metrics_port", str(metrics_port),
         "--metrics_host", "127.0.0.1", "--redis_url", redis_url, "--temporal_address", target,
         "--temporal_namespace", TEST_NAMESPACE, "--task_queue", f"lifecycle-{os.getpid()}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:

        def metrics_served() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        asyncio.run(assert_eventually(metrics_served, timeout=30, message="worker metrics"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        assert '"event": "compute_worker_stopped"' in log
        assert '"event": "service_stopped"' in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_main_task_that_fails_fails_the_process_after_the_teardown() -> None:
    closed: list[str] = []
    teardown = Teardown("worker")

    async def close() -> None:
        closed.append("client")

    teardown.add(close)

    async def main(_stop: asyncio.Event) -> None:
        raise RuntimeError("the worker lost Temporal")

    with pytest.raises(RuntimeError, match="lost Temporal"):
        await asyncio.wait_for(
            serve(BuiltProcess(name="worker", root=None, teardown=teardown, main=main), _settings()), 10
        )
    assert closed == ["client"]
