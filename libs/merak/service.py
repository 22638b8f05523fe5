"""The common start-up of a service process: settings → logging → build → serve until SIGTERM.

A composition root (`services/<name>/app.py`) builds everything first — Redis and Temporal clients,
the manager, the servicer, its metrics on a registry of its own — into a `BuiltService`; `serve`
then only serves it. Tests build the same way and serve on port 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from merak.config import ServiceSettings
from merak.errors import Unavailable
from merak.grpcserver import Cleanup, GrpcServer, run_server
from merak.host import raise_open_files
from merak.logs import configure_logging, get_logger
from merak.metrics import MetricsServer
from merak.store import REDIS_ERRORS, connect_redis

log = get_logger(__name__)

S = TypeVar("S", bound=ServiceSettings)
R = TypeVar("R")


@dataclass
class BuiltService(Generic[R]):
    """What a composition root built, ready to serve; `root` is the service's main object (its manager)."""

    name: str
    server: GrpcServer
    root: R
    # Run in order after the server stopped (background tasks, clients, Redis).
    cleanups: list[Cleanup] = field(default_factory=list)
    on_started: Cleanup | None = None
    # A /metrics endpoint the root had to open itself (the agent, before it enters a namespace).
    metrics_server: MetricsServer | None = None
    # Other listeners of the service by name (the scenario service's "rest"), host:port.
    listeners: dict[str, str] = field(default_factory=dict)

    @property
    def registry(self) -> CollectorRegistry:
        """The process's Prometheus registry (served on /metrics)."""
        return self.server.registry

    async def close(self) -> None:
        """Run the cleanups once (for a service that was started by hand, as tests do)."""
        cleanups, self.cleanups = self.cleanups, []
        for cleanup in cleanups:
            try:
                await cleanup()
            except Exception:
                log.exception("cleanup_failed", service=self.name)


async def serve(service: BuiltService[Any], settings: ServiceSettings) -> None:
    """Serve a built service until SIGTERM, with its /metrics endpoint; then drain and clean up."""
    await run_server(
        service.name,
        service.server,
        # A negative port turns the endpoint off.
        metrics_port=settings.metrics_port
        if service.metrics_server is None and settings.metrics_port >= 0
        else None,
        metrics_host=settings.metrics_host,
        metrics_server=service.metrics_server,
        grace=settings.shutdown_grace,
        cleanups=service.cleanups,
        on_started=service.on_started,
    )


def main_for(name: str, settings_type: type[S], run: Callable[[S], Coroutine[Any, Any, None]]) -> None:
    """Entry point body of `python -m services.<name>`: parse settings (env + CLI), log, run."""
    settings = settings_type(_cli_parse_args=True)  # type: ignore[call-arg]  # pydantic-settings init kwarg
    configure_logging(settings.log_level, settings.log_format, service=name)
    raised = raise_open_files()
    if raised is not None:
        log.info("open_files_raised", before=raised[0], after=raised[1])
    # SIGINT before the signal handlers are installed ends the process quietly.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings))


async def open_redis(url: str, *, timeout: float = 15.0) -> aioredis.Redis:
    """A Redis client that has answered PING, retrying until `timeout` (the stack may still be starting)."""
    client = connect_redis(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.ping()
            return client
        except REDIS_ERRORS as exc:
            if time.monotonic() >= deadline:
                await client.aclose()
                raise Unavailable(f"redis at {url} is unreachable: {exc}") from exc
            log.info("waiting_for_redis", url=url)
            await asyncio.sleep(0.25)
