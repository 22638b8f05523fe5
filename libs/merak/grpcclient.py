"""gRPC clients: channel options, a pooled channel cache, retries of UNAVAILABLE, the health probe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from merak.tls import TlsFiles, is_tcp

T = TypeVar("T")

MAX_MESSAGE_BYTES = 500 * 1024 * 1024  # as Merak's servers and clients
# What a server reads: the largest request of a lab this emulator makes is a few MB (a compute
# config of 10,000 vhosts, an overlay push of 60,000 VMs to a vhost).
MAX_REQUEST_BYTES = 16 * 1024 * 1024
CHANNEL_OPTIONS: Sequence[tuple[str, int]] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)


def open_channel(
    address: str, options: Sequence[tuple[str, int]] = CHANNEL_OPTIONS, *, ours: bool = True
) -> grpc.aio.Channel:
    """An asyncio channel with Merak's 500 MiB message limits ("host:port" or "unix:///path"): TLS
    to a TCP address of ours when the environment sets it up (merak.tls), plaintext otherwise (and
    to what is not ours: the Temporal dev server)."""
    credentials = _tls_credentials(address) if ours else None
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, options=list(options))
    return grpc.aio.insecure_channel(address, options=list(options))


def open_blocking_channel(address: str) -> grpc.Channel:
    """The same, for synchronous code (the command line)."""
    credentials = _tls_credentials(address)
    if credentials is not None:
        return grpc.secure_channel(address, credentials, options=list(CHANNEL_OPTIONS))
    return grpc.insecure_channel(address, options=list(CHANNEL_OPTIONS))


def _tls_credentials(address: str) -> grpc.ChannelCredentials | None:
    """TLS credentials for a TCP `address` when the environment sets TLS up (merak.tls), else None."""
    files = TlsFiles.current()
    return files.channel_credentials() if files is not None and is_tcp(address) else None


async def retry_unavailable(
    call: Callable[[float], Awaitable[T]],
    *,
    timeout: float,
    first_wait: float = 0.25,
    longest_wait: float = 5.0,
    on_retry: Callable[[grpc.aio.AioRpcError, float], None] | None = None,
) -> T:
    """`call(seconds left)` again while it fails UNAVAILABLE (a service restarting, Redis behind it
    restarting), waiting 0.25 s doubling to 5 s, until `timeout` seconds have gone by; then the last
    error is raised. Only for idempotent calls: an UNAVAILABLE request may have been carried out."""
    deadline = time.monotonic() + timeout
    wait = first_wait
    while True:
        left = deadline - time.monotonic()
        try:
            return await call(max(left, 0.001))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() + wait >= deadline:
                raise
            if on_retry is not None:
                on_retry(exc, wait)
            await asyncio.sleep(wait)
            wait = min(longest_wait, wait * 2)


class ChannelPool:
    """Channels by address, opened on first use and closed together (agents, one per endpoint)."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, address: str) -> grpc.aio.Channel:
        """The channel to `address`, opened once."""
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(address)
        return channel

    async def close(self) -> None:
        """Close every channel."""
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)

    async def __aenter__(self) -> ChannelPool:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


async def health_serving(address: str, service: str = "", timeout: float = 1.0, *, ours: bool = True) -> bool:
    """True when the gRPC health service at `address` reports `service` SERVING (`ours`: one of our
    servers, TLS when it is on; else plaintext)."""
    try:
        async with open_channel(address, options=(), ours=ours) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False


def health_serving_blocking(
    address: str, service: str = "", timeout: float = 1.0, *, ours: bool = True
) -> bool:
    """`health_serving` for synchronous code (no event loop running in this thread)."""
    return asyncio.run(health_serving(address, service, timeout, ours=ours))
