"""The common start-up of a service process: settings → logging → serve until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import redis.asyncio as aioredis

from merak.config import ServiceSettings
from merak.errors import Unavailable
from merak.host import raise_open_files
from merak.logs import configure_logging, get_logger
from merak.store import REDIS_ERRORS, connect_redis

log = get_logger(__name__)

S = TypeVar("S", bound=ServiceSettings)


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
