"""Serving the REST app with uvicorn inside the scenario service's event loop, over HTTPS when the
process has TLS files (merak.tls)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the service's loop owns SIGTERM and stops it."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class RestServer:
    """An HTTP listener bound at construction (a taken port fails the service's start-up at once)."""

    def __init__(self, app: FastAPI, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise OSError(exc.errno, f"REST API cannot listen on {host}:{port}: {exc.strerror}") from exc
        self._socket.listen(128)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            ssl_context_factory=None if tls is None else lambda _config, _default: tls,
        )
        self.scheme = "http" if tls is None else "https"
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """host:port it listens on."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Serve in the background."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))

    async def stop(self) -> None:
        """Finish the requests in flight, close the listener."""
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._socket.close()
