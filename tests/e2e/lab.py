"""What a run left on the machine and in the stack, to check that a teardown left nothing."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable

import redis

from merak import netns
from merak.naming import topology_short_id
from merak_tools.localstack import StackSettings

CHASSIS_DAEMONS = ("ovsdb-server", "ovs-vswitchd", "ovn-controller")


def leftovers(settings: StackSettings, topology_ids: Iterable[str]) -> dict[str, list[str]]:
    """Namespaces of the topologies, agent and chassis processes of the stack, Redis keys of the services."""
    agents = subprocess.run(
        ["pgrep", "-af", f"{settings.state_dir}/run/topologies"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        keys = [str(k) for k in client.keys("merak:*")]
    finally:
        client.close()
    return {
        "namespaces": [n for t in topology_ids for n in netns.list_names(f"mk-{topology_short_id(t)}-")],
        "agents": [line for line in agents if "services.agent" in line],
        # The OVN chassis of emulated hosts (their pid files and sockets live under the same tree).
        "chassis": [line for line in agents if any(d in line for d in CHASSIS_DAEMONS)],
        "redis keys": keys,
    }


def vm_namespaces(topology_id: str) -> list[str]:
    """The namespaces of the topology's VMs, `mk-<short>-<vhost index>-<vm>` (a vhost's VPC namespaces
    are `mk-<short>-<vhost index>-vpc<vni>`; vhosts and switches start with a letter)."""
    vm = re.compile(rf"mk-{topology_short_id(topology_id)}-[0-9]+-(?!vpc[0-9]+$)")
    return [n for n in netns.list_names(f"mk-{topology_short_id(topology_id)}-") if vm.match(n)]
