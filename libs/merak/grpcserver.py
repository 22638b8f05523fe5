"""gRPC server bootstrap: grpc.aio with health checking, reflection, metrics, logs, error mapping."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # not in its stubs
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry

from merak import netns
from merak.errors import status_for
from merak.grpcclient import MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES
from merak.logs import get_logger
from merak.metrics import GrpcMetrics
from merak.tls import TlsFiles, is_tcp

log = get_logger(__name__)

_QUIET_SERVICES = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}

ServiceRegistrar = Callable[[grpc.aio.Server], None]


@dataclass(frozen=True)
class ServiceRegistration:
    """One servicer to put on a server: its full service name and the function adding it."""

    name: str
    register: ServiceRegistrar


def _split_method(full: str) -> tuple[str, str]:
    _, service, method = full.split("/", 2) if full.count("/") >= 2 else ("", "unknown", full)
    return service, method


class _Call:
    """Bookkeeping of one RPC: status, duration, the canonical log line and the metrics."""

    def __init__(
        self, full_method: str, context: grpc.aio.ServicerContext[Any, Any], metrics: GrpcMetrics
    ) -> None:
        self.service, self.method = _split_method(full_method)
        self.metrics = metrics
        self.context = context
        self.start = time.perf_counter()
        self.code = grpc.StatusCode.OK
        self.details = ""
        self._finished = False

    async def fail(self, exc: BaseException) -> None:
        """Turn an exception from a handler into a gRPC status, logging unexpected ones once."""
        if isinstance(exc, asyncio.CancelledError):
            self.code = grpc.StatusCode.CANCELLED
            raise exc
        if isinstance(exc, grpc.aio.AbortError):  # the handler called context.abort itself
            self.code = self.context.code() or grpc.StatusCode.UNKNOWN
            self.details = self.context.details() or ""
            raise exc
        code, details = status_for(exc)
        self.code, self.details = code, details
        if code is grpc.StatusCode.INTERNAL:
            log.exception("rpc_unexpected_error", grpc_service=self.service, grpc_method=self.method)
        # abort() sends the status at once: record the call first, so a client never sees an error
        # that the metrics and the log do not show yet.
        self.finish()
        await self.context.abort(code, details)

    def finish(self) -> None:
        """Record metrics and write the one log line of this RPC (once)."""
        if self._finished:
            return
        self._finished = True
        elapsed = time.perf_counter() - self.start
        self.metrics.handled.labels(self.service, self.method, self.code.name).inc()
        self.metrics.handling_seconds.labels(self.service, self.method).observe(elapsed)
        fields: dict[str, Any] = {
            "grpc_service": self.service,
            "grpc_method": self.method,
            "grpc_code": self.code.name,
            "duration_ms": round(elapsed * 1000, 2),
        }
        if self.details:
            fields["details"] = self.details
        if self.service in _QUIET_SERVICES:
            log.debug("rpc", **fields)
        elif self.code is grpc.StatusCode.OK:
            log.info("rpc", **fields)
        else:
            log.warning("rpc", **fields)


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # stubs' generic
    """Per-RPC metrics, one log line per RPC, and domain errors mapped to status codes."""

    def __init__(self, metrics: GrpcMetrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full_method: str = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(full_method, handler.unary_unary, self.metrics),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(full_method, handler.unary_stream, self.metrics),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(full_method, handler.stream_unary, self.metrics),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(full_method, handler.stream_stream, self.metrics),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _wrap_unary(full_method: str, behavior: Any, metrics: GrpcMetrics) -> Any:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = _Call(full_method, context, metrics)
        try:
            return await behavior(request, context)
        except BaseException as exc:
            await call.fail(exc)
            raise  # pragma: no cover - fail() always raises
        finally:
            call.finish()

    return wrapped


def _wrap_stream(full_method: str, behavior: Any, metrics: GrpcMetrics) -> Any:
    async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        call = _Call(full_method, context, metrics)
        try:
            result = behavior(request, context)
            if hasattr(result, "__aiter__"):
                async for item in result:
                    yield item
            else:  # a handler that writes with context.write() and returns a coroutine
                await result
        except BaseException as exc:
            await call.fail(exc)
        finally:
            call.finish()

    return wrapped


class GrpcServer:
    """A grpc.aio server with health checking, server reflection, metrics and error mapping."""

    def __init__(
        self,
        address: str,
        registrations: Sequence[ServiceRegistration],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.address = address
        self.registrations = list(registrations)
        # The process's registry (its /metrics), or one of its own for a server built on the side.
        self.registry = registry if registry is not None else CollectorRegistry()
        self.health = health_aio.HealthServicer()
        self.server = grpc.aio.server(
            interceptors=[ObservabilityInterceptor(GrpcMetrics.create(self.registry))],
            options=[
                # Replies may be large (INFO of 10,000 vhosts); a request larger than this is
                # refused RESOURCE_EXHAUSTED before it is read (500 MiB ones were accepted).
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 90_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.port = 0

    @property
    def service_names(self) -> list[str]:
        """Every service this server answers, health and reflection included."""
        return [r.name for r in self.registrations] + [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]

    async def start(self, *, netns_fd: int | None = None, plaintext: bool = False) -> int:
        """Bind, start serving and mark every service SERVING; returns the bound TCP port (0 for unix).

        `netns_fd`: listen in that network namespace (the socket is made there, from a thread that
        enters it; the server runs on here). `plaintext`: no TLS even when the stack has it (a
        protocol whose clients speak none, as Alcor's to its host agents)."""
        for registration in self.registrations:
            registration.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(self.service_names, self.server)
        files = None if plaintext else TlsFiles.current()

        def bind() -> int:
            if files is not None and is_tcp(self.address):
                return self.server.add_secure_port(self.address, files.server_credentials())
            return self.server.add_insecure_port(self.address)

        if netns_fd is None:
            self.port = bind()
        else:

            def bind_there() -> int:
                with netns.entered_fd(netns_fd):
                    return bind()

            self.port = await asyncio.to_thread(bind_there)
        if self.port == 0 and not self.address.startswith("unix:"):
            raise OSError(f"cannot listen on {self.address}")
        await self.server.start()
        await self.set_serving(True)
        return self.port

    async def set_serving(self, serving: bool) -> None:
        """Set the health status of the whole server and of each service."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        for registration in self.registrations:
            await self.health.set(registration.name, status)

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, then let in-flight RPCs finish for up to `grace` seconds."""
        await self.set_serving(False)
        await self.server.stop(grace)


async def wait_for_signal(
    signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> signal.Signals:
    """Wait until the process receives one of `signals`; returns which one."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()

    def on_signal(sig: signal.Signals) -> None:
        if not received.done():
            received.set_result(sig)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await received
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
