"""The local backend: every node a network namespace on this machine, links veth pairs, switches bridges.

Agents are processes on this machine serving gRPC on unix sockets under the run directory. With
few vhosts each vhost gets its own agent running inside its namespace; past `max_agents`, one
agent serves a contiguous group of vhosts. With `dataplane: fake` nothing touches the kernel and a
handful of agents serve every vhost.

The package follows the backend's concerns: `kernel` makes and removes the namespaces, veth pairs
and bridges (worker threads inside each namespace); `agents` plans the agent processes and starts,
supervises, holds (host faults) and stops them; `host` is what this machine must offer (root, a
bound on real vhosts, kernel tables sized); `backend` is the TopologyBackend composing the three.
The namespaces it makes are named by services.topology.names, re-exported here for its callers.
"""

from __future__ import annotations

from services.topology.backends.local.agents import AgentPlan
from services.topology.backends.local.backend import LocalBackend
from services.topology.names import NS_PREFIX, ns_name, ns_prefix, vm_ns_prefix

__all__ = ["NS_PREFIX", "AgentPlan", "LocalBackend", "ns_name", "ns_prefix", "vm_ns_prefix"]
