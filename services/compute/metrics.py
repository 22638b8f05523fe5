"""The compute service's and worker's Prometheus metrics, on the registry their composition root builds."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True, slots=True)
class ComputeMetrics:
    """The inventory as the service sees it (refreshed by its gauge loop)."""

    vms_by_status: Gauge
    operations_running: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ComputeMetrics:
        """Register the metrics on `registry`."""
        return cls(
            vms_by_status=Gauge(
                "merak_compute_vms", "VMs of the compute configs, by status.", ["status"], registry=registry
            ),
            operations_running=Gauge(
                "merak_compute_operations_running", "Create or delete operations running.", registry=registry
            ),
        )


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """What the activities do: retries, and the time until a VM is ready."""

    retries: Counter
    vm_create_seconds: Histogram
    data_plane_ready_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> WorkerMetrics:
        """Register the metrics on `registry`."""
        return cls(
            retries=Counter(
                "merak_compute_activity_retries_total",
                "Activity attempts after the first.",
                ["activity"],
                registry=registry,
            ),
            vm_create_seconds=Histogram(
                "merak_compute_vm_create_seconds",
                "Time from the start of a deployment until a VM is DONE.",
                buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
                registry=registry,
            ),
            data_plane_ready_seconds=Histogram(
                "merak_compute_data_plane_ready_seconds",
                "Alcor: per port, from its POST to Alcor until its host applied Alcor's goal state for it.",
                ["plugin"],
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                registry=registry,
            ),
        )
