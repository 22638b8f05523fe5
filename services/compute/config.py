"""Settings of the compute service and its worker (`MERAK_*` environment variables or --flags)."""

from __future__ import annotations

from merak.config import GRPC_PORTS, METRICS_PORTS, ServiceSettings


class ComputeSettings(ServiceSettings):
    """Settings of the compute service and the compute worker."""

    grpc_port: int = GRPC_PORTS["compute"]
    metrics_port: int = METRICS_PORTS["compute"]
    worker_metrics_port: int = METRICS_PORTS["compute-worker"]
    network_address: str = f"127.0.0.1:{GRPC_PORTS['network']}"
    # Asked which agents it started: compute connects only to those (a request cannot point it at
    # any address).
    topology_address: str = f"127.0.0.1:{GRPC_PORTS['topology']}"
    task_queue: str = "merak-compute"
    # Also run a Temporal worker inside the compute process (the small local stack can do without
    # a separate `python -m services.compute.worker`).
    run_worker: bool = False
    # Hosts per shard workflow, and VMs per agent batch call.
    hosts_per_shard: int = 50
    batch_size: int = 250
    # Merak's CONCURRENCY / CONCURRENT_WORKFLOWS / RPS knobs of the worker.
    concurrency: int = 64
    concurrent_workflows: int = 16
    activities_per_second: float = 0.0
    # Seconds an agent call may take (a batch of VMs).
    agent_timeout: float = 600.0
    # Alcor plugin, overlay from goal states: how long a VM's CREATE waits for its port's goal state to be
    # applied on its host (the VM is ready then; ERROR when none came in time).
    alcor_goalstate_timeout: float = 60.0
