"""The kubernetes backend: a namespace per topology, a pod per node, links as meshnet Topology resources.

As Merak did: every node of the generated graph becomes a bare pod named after the node in the
namespace `<prefix><short id>`, and every link becomes a pair of entries (same uid, ends swapped)
in the meshnet `Topology` resources (`networkop.co.uk/v1beta1`) of its two pods, which meshnet's
CNI plugin turns into veth pairs (or VXLAN tunnels between worker nodes). A vhost pod runs the
agent on TCP port 40054 (pod IP → agent endpoint); a switch pod is a Linux bridge made with
iproute2, with no SDN controller. With `dataplane: fake` there are no links and no switch pods:
one pod per vhost runs an agent that keeps its VMs in memory.

The package follows the backend's seams: `objects` builds the namespace, meshnet resources and
pods as plain data (no I/O); `api` is the thin layer over the official client that maps its
errors; `backend` is the TopologyBackend that creates those objects through `api` and
watches the pods.
"""

from __future__ import annotations

from services.topology.backends.kubernetes.backend import ImageLookup, KubernetesBackend
from services.topology.backends.kubernetes.objects import KubernetesOptions, Resources

__all__ = ["ImageLookup", "KubernetesBackend", "KubernetesOptions", "Resources"]
