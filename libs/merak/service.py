"""The one lifecycle of every process of the product: settings once → logging → build → serve → tear down.

- `main_for` is the body of every `python -m services.<name>`: it reads the settings once (environment
  and flags), configures logs, raises the open-files limit and runs the service's `run`.
- A composition root (`services/<name>/app.py`) builds everything first — Redis and Temporal clients,
  channels, the manager, the servicer, its metrics on a registry of its own — into a `BuiltService`.
  Each thing it opens is pushed on the service's `Teardown` as it is opened, so a build that fails
  halfway closes what it had opened (`async with teardown.on_error()`), and a served one closes it
  in reverse order.
- `serve` then serves it: the gRPC server (if any) and its /metrics endpoint, an optional main task
  (the Temporal worker), until SIGTERM/SIGINT or until the main task ends; then, whatever happened,
  in a `finally`: the main task is asked to stop, the server drains, the teardown runs in reverse.
  A main task that failed fails the process (after the teardown), so a supervisor sees it.

Tests build the same way and serve on port 0 (tests/support/plugin.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry

from merak.config import ServiceSettings
from merak.errors import Unavailable
from merak.grpcserver import GrpcServer, wait_for_signal
from merak.host import raise_open_files
from merak.logs import configure_logging, get_logger
from merak.metrics import MetricsServer, serve_metrics
from merak.tls import TlsFiles

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = get_logger(__name__)

S = TypeVar("S", bound=ServiceSettings)
R = TypeVar("R")
Cleanup = Callable[[], Awaitable[None]]
# The main task of a process without requests to wait for (the Temporal worker): it runs until the
# event is set, then finishes its work in hand.
MainTask = Callable[[asyncio.Event], Awaitable[None]]


class Teardown:
    """What a process opened, closed in the reverse order of opening; each step runs even if one fails."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._steps: list[Cleanup] = []

    def add(self, cleanup: Cleanup) -> None:
        """Close this last of what is open now (call it right after opening the thing)."""
        self._steps.append(cleanup)

    def add_sync(self, cleanup: Callable[[], object]) -> None:
        """`add` for a synchronous close (a file descriptor, a metrics endpoint)."""

        async def run() -> None:
            cleanup()

        self._steps.append(run)

    async def run(self) -> None:
        """Close everything, newest first; a failing step is logged and the others still run."""
        steps, self._steps = self._steps, []
        for step in reversed(steps):
            try:
                await step()
            except Exception:
                log.exception("cleanup_failed", service=self.name)

    @contextlib.asynccontextmanager
    async def on_error(self) -> AsyncIterator[Teardown]:
        """Inside a build: if it raises, close what was opened so far, then let the error through."""
        try:
            yield self
        except BaseException:
            await self.run()
            raise


@dataclass(kw_only=True)
class BuiltProcess(Generic[R]):
    """What a composition root built, ready to run; `root` is the process's main object."""

    name: str
    root: R
    teardown: Teardown
    on_started: Cleanup | None = None
    # The process's own work when it serves no requests (the Temporal worker).
    main: MainTask | None = None
    # A /metrics endpoint the root had to open itself (the agent, before it enters a namespace).
    metrics_server: MetricsServer | None = None
    # Where the /metrics endpoint listens when `serve` opens it (None: the settings' metrics_port).
    metrics_port: int | None = None
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    async def close(self) -> None:
        """Run the teardown once (for a service that was started by hand, as tests do)."""
        await self.teardown.run()


@dataclass(kw_only=True)
class BuiltService(BuiltProcess[R]):
    """A built gRPC service: the process plus its server (whose registry is the process's)."""

    server: GrpcServer
    # Other listeners of the service by name (the scenario service's "rest"), host:port.
    listeners: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.registry = self.server.registry


async def serve(service: BuiltProcess[Any], settings: ServiceSettings) -> None:
    """Serve a built service until SIGTERM (or until its main task ends); then stop and tear down."""
    name = service.name
    server = service.server if isinstance(service, BuiltService) else None
    metrics = service.metrics_server
    port = settings.metrics_port if service.metrics_port is None else service.metrics_port
    stop = asyncio.Event()
    main: asyncio.Future[None] | None = None
    failed: BaseException | None = None
    try:
        if metrics is None and port >= 0:  # a negative port turns the endpoint off
            metrics = serve_metrics(port, settings.metrics_host, service.registry)
        if server is not None:
            await server.start()
        if service.on_started is not None:
            await service.on_started()
        if service.main is not None:
            main = asyncio.ensure_future(service.main(stop))
        # What a started service holds (modules, its server and clients) lives as long as the process:
        # out of the collector's way, a full collection walks only what requests made (an agent pushing
        # 30,000 overlay entries spent ~40% of that CPU walking its own imports).
        gc.freeze()
        log.info(
            "service_started",
            service=name,
            address=server.address if server else None,
            port=server.port if server else None,
            metrics_port=metrics.port if metrics else None,
        )
        signal = asyncio.ensure_future(wait_for_signal())
        waits: set[asyncio.Future[Any]] = {signal} if main is None else {signal, main}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if signal.done():
            log.info("service_stopping", service=name, signal=signal.result().name)
        else:
            signal.cancel()
            log.info("service_stopping", service=name, reason="main task ended")
    finally:
        stop.set()
        if main is not None:
            try:
                await main
            except Exception as exc:  # raised again once everything is closed: the process fails
                log.exception("main_task_failed", service=name)
                failed = exc
        if server is not None:
            await server.stop(settings.shutdown_grace)
        await service.teardown.run()
        if metrics is not None:
            metrics.stop()
        log.info("service_stopped", service=name)
    if failed is not None:
        raise failed


def main_for(name: str, settings_type: type[S], run: Callable[[S], Coroutine[Any, Any, None]]) -> None:
    """Entry point body of `python -m services.<name>`: read settings once (env + CLI), log, run."""
    settings = settings_type(_cli_parse_args=True)  # type: ignore[call-arg]  # pydantic-settings init kwarg
    configure_logging(settings.log_level, settings.log_format, service=name)
    # The TLS files are read here, once for the process: a missing one stops the start with its name.
    tls = TlsFiles.current()
    log.info("tls", service=name, enabled=tls is not None, mutual=bool(tls and tls.client_auth))
    raised = raise_open_files()
    if raised is not None:
        log.info("open_files_raised", before=raised[0], after=raised[1])
    # SIGINT before the signal handlers are installed ends the process quietly.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))


def without_password(url: str) -> str:
    """`url` with its password masked: what a log line or an error message may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


async def open_redis(url: str, *, timeout: float = 15.0) -> aioredis.Redis:
    """A Redis client that has answered PING, retrying until `timeout` (the stack may still be starting)."""
    # Imported here: an agent (no Redis) starts ~0.1 s sooner without the client library.
    from merak.store import REDIS_ERRORS, connect_redis  # noqa: PLC0415

    client = connect_redis(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.ping()
            return client
        except REDIS_ERRORS as exc:
            if time.monotonic() >= deadline:
                await client.aclose()
                raise Unavailable(f"redis at {without_password(url)} is unreachable: {exc}") from exc
            log.info("waiting_for_redis", url=without_password(url))
            await asyncio.sleep(0.25)
