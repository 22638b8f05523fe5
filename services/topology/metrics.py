"""The topology service's Prometheus metrics, registered on the registry its composition root builds."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, Histogram


@dataclass(frozen=True, slots=True)
class TopologyMetrics:
    """Build times, and what the topologies of this service hold."""

    build_seconds: Histogram
    namespaces: Gauge
    links: Gauge
    topologies: Gauge
    # The control plane's processes of each lab (OVN), as the last sample saw them.
    process_cpu_cores: Gauge
    process_rss_bytes: Gauge
    processes: Gauge
    chassis: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> TopologyMetrics:
        """Register the metrics on `registry`."""
        return cls(
            build_seconds=Histogram(
                "merak_topology_build_seconds",
                "Time to deploy a topology until every vhost is ready.",
                ["backend", "dataplane"],
                buckets=(0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
                registry=registry,
            ),
            namespaces=Gauge(
                "merak_topology_namespaces",
                "Network namespaces of the topologies this service manages.",
                registry=registry,
            ),
            links=Gauge(
                "merak_topology_links",
                "Links (veth pairs) of the topologies this service manages.",
                registry=registry,
            ),
            topologies=Gauge(
                "merak_topology_topologies",
                "Topologies this service manages, by status.",
                ["status"],
                registry=registry,
            ),
            process_cpu_cores=Gauge(
                "merak_topology_control_plane_cpu_cores",
                "Cores used by a lab's control-plane processes (OVN), per group, over the last second.",
                ["topology", "group"],
                registry=registry,
            ),
            process_rss_bytes=Gauge(
                "merak_topology_control_plane_resident_bytes",
                "Resident memory of a lab's control-plane processes (OVN), per group.",
                ["topology", "group"],
                registry=registry,
            ),
            processes=Gauge(
                "merak_topology_control_plane_processes",
                "Live control-plane processes (OVN) of a lab, per group.",
                ["topology", "group"],
                registry=registry,
            ),
            chassis=Gauge(
                "merak_topology_ovn_chassis",
                "A lab's OVN chassis: those its hosts run, and those the southbound database lists.",
                ["topology", "state"],
                registry=registry,
            ),
        )
