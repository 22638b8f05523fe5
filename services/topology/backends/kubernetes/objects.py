"""The Kubernetes objects of a topology, built and read as plain data: no client, no I/O.

The namespace, the meshnet `Topology` resources and the pods (with the shell scripts their
containers run) are built here; pod and node objects the API server returns are read back here.
The unit tests validate what is built against the Kubernetes and meshnet schemas.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from merak import vhostsfile
from merak.config import GRPC_PORTS, METRICS_PORTS
from merak.v1 import common_pb2, topology_pb2
from services.topology.backends import HostRuntime
from services.topology.backends.vhosts import ACA_PORT, vhosts_file
from services.topology.models import Node, Topology

AGENT_PORT = GRPC_PORTS["agent"]
AGENT_METRICS_PORT = METRICS_PORTS["agent"]
MESHNET_GROUP = "networkop.co.uk"
MESHNET_VERSION = "v1beta1"
MESHNET_PLURAL = "topologies"
MESHNET_KIND = "Topology"

LABEL_APP = "app.kubernetes.io/name"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_TOPOLOGY = "merak.io/topology"
LABEL_ROLE = "merak.io/role"
ANNOTATION_TOPOLOGY_ID = "merak.io/topology-id"
MANAGER = "merak-topology"
ROLE_VHOST = "vhost"
ROLE_SWITCH = "switch"

VHOSTS_FILE = "/run/merak/vhosts.json"
BRIDGED_MARKER = "/run/merak/bridged"

# The vhost pod's command. meshnet may add an interface after the container started (when the peer
# pod comes up later), so it waits for every NIC; then it sets the MAC and addresses the topology
# service reports, names the pod's own network namespace (the agent works on named namespaces, and
# inside a pod the vhost's namespace is the pod's), and becomes the agent.
VHOST_SCRIPT = """set -eu
for nic in $MERAK_NICS; do
  until ip link show "$nic" >/dev/null 2>&1; do sleep 0.5; done
done
if [ -n "$MERAK_NIC_MAC" ]; then
  ip link set "${MERAK_NIC_MAC%%=*}" down
  ip link set "${MERAK_NIC_MAC%%=*}" address "${MERAK_NIC_MAC#*=}"
fi
for entry in $MERAK_NIC_ADDRESSES; do ip addr replace "${entry#*=}" dev "${entry%%=*}"; done
for nic in $MERAK_NICS; do ip link set "$nic" up; done
if [ -n "$MERAK_VHOST_NETNS" ]; then ip netns attach "$MERAK_VHOST_NETNS" $$; fi
mkdir -p "$(dirname "$MERAK_VHOSTS_FILE")"
printf '%s' "$MERAK_VHOSTS_JSON" > "$MERAK_VHOSTS_FILE"
exec python -m services.agent
"""

# The switch pod's command: a bridge with STP off (a tree has no loops) that takes every meshnet
# interface as it appears; readiness is the marker file written once all of them are ports.
SWITCH_SCRIPT = """set -eu
ip link show br0 >/dev/null 2>&1 || ip link add br0 type bridge forward_delay 0
ip link set br0 up
for nic in $MERAK_NICS; do
  until ip link show "$nic" >/dev/null 2>&1; do sleep 0.5; done
  ip link set "$nic" master br0
  ip link set "$nic" up
done
mkdir -p "$(dirname "$MERAK_BRIDGED_MARKER")"
touch "$MERAK_BRIDGED_MARKER"
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
"""


# --- options and images ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resources:
    """Requests and limits of one container; "" leaves a value out."""

    cpu: str = ""
    memory: str = ""
    cpu_limit: str = ""
    memory_limit: str = ""

    def manifest(self) -> dict[str, dict[str, str]]:
        """The container's `resources` field."""
        requests = {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v}
        limits = {k: v for k, v in (("cpu", self.cpu_limit), ("memory", self.memory_limit)) if v}
        result: dict[str, dict[str, str]] = {}
        if requests:
            result["requests"] = requests
        if limits:
            result["limits"] = limits
        return result


@dataclass(frozen=True, slots=True)
class Images:
    """The images of vhost pods (the agent) and switch pods (sh + iproute2)."""

    vhost: str
    switch: str


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    """How the backend reaches the cluster and what it asks of it."""

    kubeconfig: str = ""
    context: str = ""
    namespace_prefix: str = "merak-"
    vhost_image: str = "merak:latest"
    switch_image: str = ""
    image_pull_policy: str = "IfNotPresent"
    vhost_resources: Resources = Resources("100m", "128Mi", "", "1Gi")
    switch_resources: Resources = Resources("10m", "16Mi", "", "128Mi")
    agent_env: Mapping[str, str] = field(default_factory=dict)
    max_vhosts: int = 5_000
    ready_timeout: float = 900.0
    delete_timeout: float = 300.0
    poll_interval: float = 2.0
    api_workers: int = 16
    request_timeout: float = 30.0

    @property
    def default_images(self) -> Images:
        """The images used when a topology config names none."""
        return Images(self.vhost_image, self.switch_image or self.vhost_image)


_VHOST_IMAGE_WORDS = ("aca", "agent", "vhost")
_SWITCH_IMAGE_WORDS = ("ovs", "switch", "bridge")


def resolve_images(configured: Iterable[topology_pb2.InternalTopologyImage], defaults: Images) -> Images:
    """Pick the vhost and switch images of a topology config; the defaults fill in what it leaves out.

    By name first, as Merak did ("ACA" in the name: the vhost image, "OVS": the switch image; here
    also "agent"/"vhost" and "switch"/"bridge", any case), else by `type` (VSWITCH: switch, VHOST:
    vhost). The image reference is `registry` (Merak's field), or `name` when `registry` is empty.
    """
    vhost, switch = "", ""
    for image in configured:
        ref = image.registry or image.name
        if not ref:
            continue
        name = image.name.lower()
        if any(word in name for word in _VHOST_IMAGE_WORDS):
            vhost = vhost or ref
        elif any(word in name for word in _SWITCH_IMAGE_WORDS) or image.type == topology_pb2.VSWITCH:
            switch = switch or ref
        elif image.type == topology_pb2.VHOST:
            vhost = vhost or ref
    return Images(vhost or defaults.vhost, switch or defaults.switch)


# --- the objects of a topology --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopologyObjects:
    """Every Kubernetes object one topology needs, in creation order within each list."""

    namespace: dict[str, Any]
    topologies: list[dict[str, Any]]
    pods: list[dict[str, Any]]


def namespace_name(prefix: str, short_id: str) -> str:
    """The namespace of a topology."""
    return f"{prefix}{short_id}"


def meshnet_links(topology: Topology) -> dict[str, list[dict[str, Any]]]:
    """The `spec.links` of every node's Topology resource: each link on both ends, same uid, ends swapped."""
    ip_of = {(node.name, nic.name): nic.ip for node in topology.nodes for nic in node.nics}
    links: dict[str, list[dict[str, Any]]] = {node.name: [] for node in topology.nodes}
    for link in topology.links:
        ends = (
            (link.a_node, link.a_nic, link.b_node, link.b_nic),
            (link.b_node, link.b_nic, link.a_node, link.a_nic),
        )
        for local, local_nic, peer, peer_nic in ends:
            entry: dict[str, Any] = {
                "uid": link.uid,
                "peer_pod": peer,
                "local_intf": local_nic,
                "peer_intf": peer_nic,
            }
            # meshnet reads IPs in CIDR form; switch ports have none.
            if ip_of.get((local, local_nic)):
                entry["local_ip"] = ip_of[(local, local_nic)]
            if ip_of.get((peer, peer_nic)):
                entry["peer_ip"] = ip_of[(peer, peer_nic)]
            links[local].append(entry)
    return links


def build_objects(topology: Topology, options: KubernetesOptions, images: Images) -> TopologyObjects:
    """The namespace, the meshnet resources (real dataplane) and the pods of a topology."""
    spec = topology.spec
    namespace = namespace_name(options.namespace_prefix, spec.short_id)
    common = {LABEL_PART_OF: "merak", LABEL_MANAGED_BY: MANAGER, LABEL_TOPOLOGY: spec.short_id}
    namespace_object = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": namespace,
            # Vhost and switch pods are privileged: namespaces with an enforced Pod Security level
            # below "privileged" would reject them.
            "labels": {**common, "pod-security.kubernetes.io/enforce": "privileged"},
            "annotations": {ANNOTATION_TOPOLOGY_ID: spec.topology_id},
        },
    }
    if not spec.plane.builds_namespaces:
        fake = _PodFactory(topology, namespace, common, options, images, {})
        return TopologyObjects(
            namespace_object, [], [fake.vhost(i, n) for i, n in enumerate(topology.vhosts())]
        )
    links = meshnet_links(topology)
    topologies = [
        {
            "apiVersion": f"{MESHNET_GROUP}/{MESHNET_VERSION}",
            "kind": MESHNET_KIND,
            "metadata": {"name": node.name, "namespace": namespace, "labels": dict(common)},
            "spec": {"links": links[node.name]},
        }
        for node in topology.nodes
    ]
    factory = _PodFactory(topology, namespace, common, options, images, links)
    # Merak's order: switches, then vhosts (meshnet does not mind; the bridges are ready first).
    pods = [factory.switch(node) for node in topology.switches()]
    pods += [factory.vhost(index, node) for index, node in enumerate(topology.vhosts())]
    return TopologyObjects(namespace_object, topologies, pods)


@dataclass(frozen=True, slots=True)
class _PodFactory:
    """Builds the pods of one topology."""

    topology: Topology
    namespace: str
    common: Mapping[str, str]
    options: KubernetesOptions
    images: Images
    links: Mapping[str, list[dict[str, Any]]]

    def nics(self, node: Node) -> list[str]:
        """The node's NICs that a link uses: the interfaces meshnet creates in its pod."""
        return [str(entry["local_intf"]) for entry in self.links.get(node.name, [])]

    def metadata(self, node: Node, role: str) -> dict[str, Any]:
        """Name, namespace and labels of a node's pod."""
        return {
            "name": node.name,
            "namespace": self.namespace,
            "labels": {**self.common, LABEL_APP: f"merak-{role}", LABEL_ROLE: role},
        }

    def spec(self, role: str, container: dict[str, Any]) -> dict[str, Any]:
        """A pod spec around one container, spread over the worker nodes with the pods of its role."""
        spread = {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            # A full node still takes pods: an emulation on fewer nodes beats one that never starts.
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {LABEL_TOPOLOGY: self.common[LABEL_TOPOLOGY], LABEL_ROLE: role}},
        }
        return {
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 5,
            # Thousands of pods: no token they do not use, no environment variable per Service.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "topologySpreadConstraints": [spread],
            "containers": [container],
        }

    def vhost(self, index: int, node: Node) -> dict[str, Any]:
        """The pod of the index-th vhost: the agent, serving that one vhost on port 40054."""
        nics = self.nics(node)
        first = node.nics[0] if node.nics else None
        # Alcor's NCM reaches a host's agent at its pod IP, port 50001 (as it reached ACA in Merak's pods).
        document = vhosts_file(self.topology, [(index, node)], lambda _index: f"0.0.0.0:{ACA_PORT}")
        vhost = document.vhosts[0]
        env = {
            **self.options.agent_env,
            "MERAK_NICS": " ".join(nics),
            "MERAK_NIC_MAC": f"{first.name}={vhost.mac}" if first and first.name in nics else "",
            "MERAK_NIC_ADDRESSES": " ".join(f"{n.name}={n.ip}" for n in node.nics if n.ip and n.name in nics),
            "MERAK_VHOST_NETNS": vhost.netns,
            "MERAK_VHOSTS_FILE": VHOSTS_FILE,
            "MERAK_VHOSTS_JSON": vhostsfile.dumps(document),
            "MERAK_GRPC_PORT": str(AGENT_PORT),
            "MERAK_METRICS_PORT": str(AGENT_METRICS_PORT),
            "MERAK_LOG_FORMAT": "json",
        }
        container = {
            "name": "agent",
            "image": self.images.vhost,
            "imagePullPolicy": self.options.image_pull_policy,
            "command": ["/bin/sh", "-c", VHOST_SCRIPT],
            "env": [{"name": name, "value": value} for name, value in env.items()],
            "ports": [
                {"name": "grpc", "containerPort": AGENT_PORT, "protocol": "TCP"},
                {"name": "metrics", "containerPort": AGENT_METRICS_PORT, "protocol": "TCP"},
                # Alcor's goal states (GoalStateProvisioner, as ACA), served once the vhost has an Alcor port.
                {"name": "aca", "containerPort": ACA_PORT, "protocol": "TCP"},
            ],
            # The agent's own gRPC health service: READY in INFO means the agent answers.
            "readinessProbe": {"grpc": {"port": AGENT_PORT}, "periodSeconds": 2, "failureThreshold": 3},
            # Namespaces, veths, bridges and VXLAN devices inside the pod, and `ip netns attach`.
            "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"]}},
            "resources": self.options.vhost_resources.manifest(),
        }
        metadata = self.metadata(node, ROLE_VHOST)
        metadata["annotations"] = {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(AGENT_METRICS_PORT),
            "prometheus.io/path": "/metrics",
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": self.spec(ROLE_VHOST, container),
        }

    def switch(self, node: Node) -> dict[str, Any]:
        """The pod of a switch: a Linux bridge over the node's meshnet interfaces."""
        env = {"MERAK_NICS": " ".join(self.nics(node)), "MERAK_BRIDGED_MARKER": BRIDGED_MARKER}
        container = {
            "name": "bridge",
            "image": self.images.switch,
            "imagePullPolicy": self.options.image_pull_policy,
            "command": ["/bin/sh", "-c", SWITCH_SCRIPT],
            "env": [{"name": name, "value": value} for name, value in env.items()],
            "readinessProbe": {"exec": {"command": ["cat", BRIDGED_MARKER]}, "periodSeconds": 2},
            "securityContext": {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}},
            "resources": self.options.switch_resources.manifest(),
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self.metadata(node, ROLE_SWITCH),
            "spec": self.spec(ROLE_SWITCH, container),
        }


# --- pods and nodes, read back --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodState:
    """What a pod says about itself: ready or not, and why not."""

    ready: bool
    deleting: bool
    failed: bool
    ip: str
    node: str
    why: str


def pod_state(pod: Mapping[str, Any]) -> PodState:
    """Read readiness, IP, node and the reason it is not ready from a pod object."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    ready = (conditions.get("Ready") or {}).get("status") == "True"
    phase = status.get("phase") or "Pending"
    deleting = bool(metadata.get("deletionTimestamp"))
    why = ""
    if deleting:
        why = "terminating"
    elif not ready:
        scheduled = conditions.get("PodScheduled") or {}
        waiting = [(s.get("state") or {}).get("waiting") or {} for s in status.get("containerStatuses") or []]
        reasons = [w.get("reason", "") for w in waiting if w.get("reason")]
        if scheduled.get("status") == "False":
            why = f"unscheduled: {scheduled.get('message') or scheduled.get('reason') or 'waiting'}"
        elif reasons:
            why = reasons[0]
        else:
            why = phase if phase != "Running" else "not ready"
    return PodState(
        ready=ready and not deleting,
        deleting=deleting,
        failed=phase == "Failed",
        ip=status.get("podIP") or "",
        node=(pod.get("spec") or {}).get("nodeName") or "",
        why=why,
    )


def node_host(node: Mapping[str, Any]) -> HostRuntime:
    """A cluster node as a host of the topology service: name, InternalIP, Ready condition."""
    addresses = (node.get("status") or {}).get("addresses") or []
    ip = next((a.get("address", "") for a in addresses if a.get("type") == "InternalIP"), "")
    conditions = (node.get("status") or {}).get("conditions") or []
    # Merak called a node READY when the condition merely existed; its value is what counts.
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return HostRuntime(
        name=(node.get("metadata") or {}).get("name", ""),
        ip=ip,
        status=common_pb2.READY if ready else common_pb2.ERROR,
    )
