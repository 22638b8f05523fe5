"""The real data plane: a vhost's VPCs and VMs as network namespaces, in the kernel.

`dataplane.Dataplane` is the plane (checks, locking, logs) and hands the kernel work to three parts:
`vpcs` (VPC namespaces: br0, the anycast gateways, vx<vni>), `vms` (VM namespaces and their veth
ports on br0) and `overlay` (vx<vni>'s flood list, remote VMs' neighbour and FDB entries, pushed
in bulk through `services.agent.netlink_bulk`). Loaded only by an agent whose plane is real.
"""

from services.agent.planes.real.dataplane import Dataplane

__all__ = ["Dataplane"]
