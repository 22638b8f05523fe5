"""The agent's Prometheus metrics, registered on the registry its composition root builds."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from merak.metrics import ControlPlaneMetrics


@dataclass(frozen=True, slots=True)
class AgentMetrics:
    """VMs present, time per VM of a batch, failures by reason."""

    vms: Gauge
    vm_seconds: Histogram
    failures: Counter
    control_plane: ControlPlaneMetrics
    goalstate_ready: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AgentMetrics:
        """Register the metrics on `registry`."""
        return cls(
            vms=Gauge("merak_agent_vms", "VMs present in the vhosts this agent serves.", registry=registry),
            vm_seconds=Histogram(
                "merak_agent_vm_operation_seconds",
                "Time per VM of a create or delete batch (batch time / VMs in it).",
                ["operation"],
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
                registry=registry,
            ),
            failures=Counter(
                "merak_agent_vm_failures_total",
                "VM operations that failed, by reason.",
                ["operation", "reason"],
                registry=registry,
            ),
            control_plane=ControlPlaneMetrics.create(registry),
            goalstate_ready=Histogram(
                "merak_agent_goalstate_ready_seconds",
                "Alcor mode: from a port's POST to Alcor until its vhost applied Alcor's goal state for it.",
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                registry=registry,
            ),
        )
