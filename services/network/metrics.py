"""The network service's Prometheus metrics, registered on the registry its composition root builds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from merak.metrics import RPC_LATENCY_BUCKETS, ControlPlaneMetrics


@dataclass(frozen=True, slots=True)
class NetworkMetrics:
    """Objects held, addresses handed out and given back, plugin calls into the control plane."""

    objects: Gauge
    allocated: Counter
    released: Counter
    plugin_seconds: Histogram
    control_plane: ControlPlaneMetrics

    @classmethod
    def create(cls, registry: CollectorRegistry) -> NetworkMetrics:
        """Register the metrics on `registry`."""
        return cls(
            objects=Gauge(
                "merak_network_objects",
                "Objects held by the network configs of this service, by plugin and kind.",
                ["plugin", "kind"],
                registry=registry,
            ),
            allocated=Counter(
                "merak_network_ipam_allocated_total", "Addresses handed out to VM ports.", registry=registry
            ),
            released=Counter(
                "merak_network_ipam_released_total", "Addresses given back by VM ports.", registry=registry
            ),
            plugin_seconds=Histogram(
                "merak_network_plugin_call_seconds",
                "Time of one call of a network plugin into its control plane, by plugin and operation.",
                ["plugin", "operation"],
                buckets=RPC_LATENCY_BUCKETS,
                registry=registry,
            ),
            control_plane=ControlPlaneMetrics.create(registry),
        )

    @contextmanager
    def timed(self, plugin: str, operation: str) -> Iterator[None]:
        """Record how long the block took as one plugin call."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.plugin_seconds.labels(plugin, operation).observe(time.perf_counter() - start)
