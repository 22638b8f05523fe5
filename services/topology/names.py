"""The names of a topology's network namespaces, which its backends and agents agree on.

`mk-<short id>-<node>` is a node's namespace (made by the local backend; a Kubernetes pod names
its own so); `mk-<short id>-<index>-…` are the namespaces an agent makes for the VMs of the
index-th vhost. Node names start with a letter, so the two never meet.
"""

from __future__ import annotations

NS_PREFIX = "mk"


def ns_prefix(short_id: str) -> str:
    """Every namespace of a topology starts with this, and nothing else does."""
    return f"{NS_PREFIX}-{short_id}-"


def ns_name(short_id: str, node: str) -> str:
    """The namespace of `node`."""
    return f"{ns_prefix(short_id)}{node}"


def vm_ns_prefix(short_id: str, index: int) -> str:
    """The prefix of the namespaces the agent makes for the VMs of the index-th vhost."""
    return f"{ns_prefix(short_id)}{index}"
