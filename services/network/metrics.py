"""The network service's Prometheus metrics, registered on the registry its composition root builds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from merak.metrics import RPC_LATENCY_BUCKETS, ControlPlaneMetrics

# Port-up latency: milliseconds with a dummy chassis, seconds to minutes on a loaded central.
PORT_UP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)


@dataclass(frozen=True, slots=True)
class NetworkMetrics:
    """Objects held, addresses handed out and given back, plugin calls into the control plane."""

    objects: Gauge
    allocated: Counter
    released: Counter
    borrowed: Counter
    plugin_seconds: Histogram
    control_plane: ControlPlaneMetrics
    port_up_seconds: Histogram
    ovn_ports: Counter

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
            borrowed=Counter(
                "merak_network_ipam_borrowed_total",
                "Addresses handed out outside their host's blocks (every block of the subnet was taken): "
                "each one is a /32 route on every other host.",
                registry=registry,
            ),
            plugin_seconds=Histogram(
                "merak_network_plugin_call_seconds",
                "Time of one call of a network plugin into its control plane, by plugin and operation.",
                ["plugin", "operation"],
                buckets=RPC_LATENCY_BUCKETS,
                registry=registry,
            ),
            control_plane=ControlPlaneMetrics.create(registry),
            port_up_seconds=Histogram(
                "merak_network_ovn_port_up_seconds",
                "From a VM's logical switch port's insert in OVN's northbound database to `up` in it.",
                buckets=PORT_UP_BUCKETS,
                registry=registry,
            ),
            ovn_ports=Counter(
                "merak_network_ovn_ports_total",
                "Logical switch ports of VMs the ovn plugin made or removed in OVN's northbound database.",
                ["operation"],
                registry=registry,
            ),
        )

    @contextmanager
    def timed(self, plugin: str, operation: str) -> Iterator[None]:
        """Record how long the block took as one plugin call."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.plugin_seconds.labels(plugin, operation).observe(time.perf_counter() - start)
