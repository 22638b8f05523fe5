"""Prometheus: the gRPC server metrics, and the `/metrics` HTTP endpoint of a process's own registry.

Every process builds one `CollectorRegistry` in its composition root and hands it to what it builds;
nothing registers on the global registry, so two services in one process (tests) never collide.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)

# `_created` series double every counter's output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated upstream

RPC_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True, slots=True)
class GrpcMetrics:
    """Per-RPC metrics of a gRPC server, on the registry of the process that serves it."""

    handled: Counter
    handling_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GrpcMetrics:
        """Register the server metrics on `registry`."""
        return cls(
            handled=Counter(
                "merak_grpc_server_handled_total",
                "gRPC calls completed by this server, by service, method and status code.",
                ["grpc_service", "grpc_method", "grpc_code"],
                registry=registry,
            ),
            handling_seconds=Histogram(
                "merak_grpc_server_handling_seconds",
                "Time from receiving a gRPC call to finishing it.",
                ["grpc_service", "grpc_method"],
                buckets=RPC_LATENCY_BUCKETS,
                registry=registry,
            ),
        )


# Alcor's services, as a label: what each call of the control plane under test went to.
CONTROL_PLANE_SERVICES = ("port", "vpc", "subnet", "sg", "router", "node", "ipam")


def control_plane_service(operation: str) -> str:
    """The control-plane service an operation name calls (create_security_group_rule -> sg)."""
    for keyword, service in (
        ("security_group", "sg"), ("port", "port"), ("vpc", "vpc"), ("subnet", "subnet"),
        ("router", "router"), ("node", "node"),
    ):  # fmt: skip
        if keyword in operation:
            return service
    return "other"


@dataclass(frozen=True, slots=True)
class ControlPlaneMetrics:
    """Every call into the control plane under test (Alcor's REST API, our native IPAM), timed."""

    seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ControlPlaneMetrics:
        """Register the histogram on `registry`."""
        return cls(
            Histogram(
                "merak_control_plane_request_seconds",
                "Calls into the control plane under test, by plugin, service, operation and status code "
                "(HTTP status, a gRPC code name, or 'error' when no answer came).",
                ["plugin", "service", "operation", "code"],
                buckets=RPC_LATENCY_BUCKETS,
                registry=registry,
            )
        )

    def observe(self, plugin: str, operation: str, code: str, seconds: float, service: str = "") -> None:
        """One call."""
        self.seconds.labels(plugin, service or control_plane_service(operation), operation, code).observe(
            seconds
        )


@dataclass
class MetricsServer:
    """A running `/metrics` HTTP endpoint."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        """The TCP port it listens on (useful when started on port 0)."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(port: int, host: str, registry: CollectorRegistry) -> MetricsServer:
    """Serve Prometheus metrics over HTTP on `host:port` (port 0 picks a free one)."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(server, thread)
