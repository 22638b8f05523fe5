"""The compute service: the VMs of a compute config, placed on the topology's vhosts, given addresses by
the network service, made by the vhosts' agents through Temporal workflows; their progress and results.

The service: server (gRPC, thin) -> manager (CREATE / UPDATE / INFO / DELETE, progress, results), which
asks admission (plugin, network config, subnets, agents) and inventory (which VMs go on which host,
pure) before it writes the store (every Redis key: store/) and starts a workflow.
The worker: workflows (one per operation, a child per shard of hosts; deterministic) -> activities
(VM batches, overlay) with plugins (native or Alcor: how a VM is made) and churn (VMs replaced at a
rate). contracts holds what they pass each other; results builds the results from the stored samples;
metrics, config, app (composition root), worker and __main__ start it all.
"""
