"""The kubernetes backend: a namespace per topology, a pod per node, links as meshnet Topology resources.

As Merak did: every node of the generated graph becomes a bare pod named after the node in the
namespace `<prefix><short id>`, and every link becomes a pair of entries (same uid, ends swapped)
in the meshnet `Topology` resources (`networkop.co.uk/v1beta1`) of its two pods, which meshnet's
CNI plugin turns into veth pairs (or VXLAN tunnels between worker nodes). A vhost pod runs the
agent on TCP port 40054 (pod IP → agent endpoint); a switch pod is a Linux bridge made with
iproute2, with no SDN controller. With `dataplane: fake` there are no links and no switch pods:
one pod per vhost runs an agent that keeps its VMs in memory.

The official `kubernetes` client is synchronous; its calls run in a bounded thread pool, so that
creating thousands of pods proceeds a few dozen at a time without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import urllib3
from kubernetes.client import ApiClient, Configuration, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, incluster_config, kube_config

from merak.config import GRPC_PORTS, METRICS_PORTS
from merak.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, MerakError, Unavailable
from merak.logs import get_logger
from merak.v1 import common_pb2, topology_pb2
from services.topology.backends import (
    DestroyReport,
    HostRuntime,
    ReadyCallback,
    TopologyBackend,
    VhostRuntime,
)
from services.topology.backends.local import ns_name, vm_ns_prefix
from services.topology.models import Node, Topology, TopologySpec, vhost_mac

log = get_logger(__name__)

T = TypeVar("T")

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
# A DNS-1123 label: what pod and namespace names must be.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_DNS_LABEL = 63

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


# The images of a topology config, looked up by topology id (the topology service's store).
ImageLookup = Callable[[str], Awaitable[Sequence[topology_pb2.InternalTopologyImage]]]

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


# --- the objects of a topology (pure; the unit tests validate them against the schemas) ---------------


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
    if spec.dataplane != "real":
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
        spec = self.topology.spec
        nics = self.nics(node)
        first = node.nics[0] if node.nics else None
        ip, _, prefix = (first.ip if first else "").partition("/")
        mac = vhost_mac(spec.short_id, index)
        netns = ns_name(spec.short_id, node.name) if spec.dataplane == "real" else ""
        document = {
            "topology_id": spec.topology_id,
            "short_id": spec.short_id,
            "dataplane": spec.dataplane,
            "vhosts": [
                {
                    "name": node.name,
                    "index": index,
                    "netns": netns,
                    "vm_ns_prefix": vm_ns_prefix(spec.short_id, index),
                    "datapath_ip": ip,
                    "prefix_len": int(prefix or 0),
                    "nic": first.name if first else "",
                    "mac": mac,
                }
            ],
        }
        env = {
            **self.options.agent_env,
            "MERAK_NICS": " ".join(nics),
            "MERAK_NIC_MAC": f"{first.name}={mac}" if first and first.name in nics else "",
            "MERAK_NIC_ADDRESSES": " ".join(f"{n.name}={n.ip}" for n in node.nics if n.ip and n.name in nics),
            "MERAK_VHOST_NETNS": netns,
            "MERAK_VHOSTS_FILE": VHOSTS_FILE,
            "MERAK_VHOSTS_JSON": json.dumps(document, separators=(",", ":")),
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


# --- pod state --------------------------------------------------------------------------------------


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


# --- the API calls ----------------------------------------------------------------------------------


class KubernetesApiError(MerakError):
    """The API server refused a call; the gRPC code follows the HTTP status."""

    def __init__(self, status: int, what: str, message: str) -> None:
        super().__init__(f"kubernetes API: {what}: HTTP {status}: {message}")
        self.status = status
        if status in (401, 403):
            self.code = grpc.StatusCode.FAILED_PRECONDITION
        elif status == 429 or status >= 500:
            self.code = grpc.StatusCode.UNAVAILABLE


def load_configuration(kubeconfig: str = "", context: str = "") -> Configuration:
    """Client configuration: the kubeconfig given, else in-cluster in a pod, else the default kubeconfig."""
    configuration = Configuration()
    try:
        if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            incluster_config.load_incluster_config(client_configuration=configuration)
            return configuration
        # The client reads $KUBECONFIG once at import; read it now, so a setting made later counts.
        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        kube_config.load_kube_config(
            config_file=path,
            context=context or None,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, OSError, ValueError, TypeError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise FailedPrecondition(
            f"the kubernetes backend has no cluster to talk to: no in-cluster service account and no "
            f"usable kubeconfig at {where} ({exc}); set MERAK_KUBECONFIG or KUBECONFIG, or run the "
            "topology service in the cluster"
        ) from exc
    return configuration


class KubernetesApi:
    """The handful of API calls the backend makes, on the official client; blocking (run in threads).

    Replies are read as JSON, not as the client's model objects: listing thousands of pods through
    the models costs seconds of CPU.
    """

    def __init__(self, configuration: Configuration, request_timeout: float = 30.0) -> None:
        self.host = str(configuration.host)
        self._client = ApiClient(configuration)
        self._core = CoreV1Api(self._client)
        self._custom = CustomObjectsApi(self._client)
        self._timeout = request_timeout

    def _call(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            response = method(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            raise KubernetesApiError(int(exc.status or 0), what, _api_message(exc)) from None
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(f"kubernetes API at {self.host} is unreachable ({what}): {exc}") from None
        try:
            data = response.data
        finally:
            # Unpreloaded responses hold their pooled connection until released.
            response.release_conn()
        return json.loads(data) if data else None

    def _create(self, what: str, method: Callable[..., Any], *args: Any) -> bool:
        """True when created, False when it already existed."""
        try:
            self._call(what, method, *args)
        except KubernetesApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def create_namespace(self, body: Mapping[str, Any]) -> bool:
        """Create a namespace; False if it exists."""
        return self._create(f"create namespace {body['metadata']['name']}", self._core.create_namespace, body)

    def read_namespace(self, name: str) -> dict[str, Any] | None:
        """The namespace, or None when there is none."""
        try:
            result: dict[str, Any] = self._call(f"read namespace {name}", self._core.read_namespace, name)
        except KubernetesApiError as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def delete_namespace(self, name: str) -> bool:
        """Start deleting a namespace (and everything in it); False when there was none."""
        try:
            self._call(
                f"delete namespace {name}",
                self._core.delete_namespace,
                name,
                body={"propagationPolicy": "Background"},
            )
        except KubernetesApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def create_pod(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create a pod; False if it exists."""
        name = body["metadata"]["name"]
        return self._create(
            f"create pod {namespace}/{name}", self._core.create_namespaced_pod, namespace, body
        )

    def list_pods(self, namespace: str, label_selector: str = "") -> list[dict[str, Any]]:
        """Pods of a namespace matching a label selector (none when the namespace does not exist)."""
        reply = self._call(
            f"list pods in {namespace}",
            self._core.list_namespaced_pod,
            namespace,
            label_selector=label_selector,
        )
        return list(reply.get("items") or []) if reply else []

    def create_topology(self, namespace: str, body: Mapping[str, Any]) -> bool:
        """Create a meshnet Topology resource; False if it exists."""
        name = body["metadata"]["name"]
        try:
            return self._create(
                f"create {MESHNET_PLURAL}.{MESHNET_GROUP} {namespace}/{name}",
                self._custom.create_namespaced_custom_object,
                MESHNET_GROUP,
                MESHNET_VERSION,
                namespace,
                MESHNET_PLURAL,
                body,
            )
        except KubernetesApiError as exc:
            if exc.status == 404:
                raise FailedPrecondition(
                    f"meshnet is not installed in the cluster at {self.host}: it serves no "
                    f"{MESHNET_PLURAL}.{MESHNET_GROUP}/{MESHNET_VERSION} resources (install meshnet-cni, "
                    "see the README's 'Run on a cluster', or use dataplane: fake)"
                ) from None
            raise

    def list_topologies(self, namespace: str) -> list[dict[str, Any]]:
        """The meshnet Topology resources of a namespace."""
        reply = self._call(
            f"list {MESHNET_PLURAL}.{MESHNET_GROUP} in {namespace}",
            self._custom.list_namespaced_custom_object,
            MESHNET_GROUP,
            MESHNET_VERSION,
            namespace,
            MESHNET_PLURAL,
        )
        return list(reply.get("items") or []) if reply else []

    def list_nodes(self) -> list[dict[str, Any]]:
        """Every node of the cluster."""
        reply = self._call("list nodes", self._core.list_node)
        return list(reply.get("items") or []) if reply else []

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _api_message(exc: ApiException) -> str:
    """The `message` of a Status reply, else the HTTP reason."""
    try:
        body = json.loads(exc.body or b"")
        return str(body.get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason or "")


def _node_host(node: Mapping[str, Any]) -> HostRuntime:
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


# --- the backend ------------------------------------------------------------------------------------


class KubernetesBackend(TopologyBackend):
    """Pods and meshnet links on a Kubernetes cluster; the client is built on first use."""

    name = "kubernetes"

    def __init__(
        self,
        options: KubernetesOptions,
        *,
        images: ImageLookup | None = None,
        configuration: Configuration | None = None,
    ) -> None:
        self.options = options
        self._image_lookup = images
        self._configuration = configuration
        self._api: KubernetesApi | None = None
        self._executor = ThreadPoolExecutor(max_workers=options.api_workers, thread_name_prefix="k8s-api")
        # Nodes as last read by deploy() or inspect(); hosts() is synchronous and cannot ask.
        self._hosts: list[HostRuntime] = []
        self._nodes_forbidden = False

    # --- plumbing ------------------------------------------------------------------------------

    def api(self) -> KubernetesApi:
        """The API client; FailedPrecondition when there is no cluster configuration."""
        if self._api is None:
            configuration = self._configuration or load_configuration(
                self.options.kubeconfig, self.options.context
            )
            # One pooled connection per worker thread, or urllib3 discards the extra ones.
            configuration.connection_pool_maxsize = max(self.options.api_workers, 1)
            self._api = KubernetesApi(configuration, self.options.request_timeout)
        return self._api

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, functools.partial(func, *args)
        )

    def namespace(self, spec: TopologySpec) -> str:
        """The namespace of a topology."""
        return namespace_name(self.options.namespace_prefix, spec.short_id)

    async def _images(self, topology_id: str) -> Images:
        configured = await self._image_lookup(topology_id) if self._image_lookup else ()
        return resolve_images(configured, self.options.default_images)

    async def _refresh_hosts(self) -> None:
        if self._nodes_forbidden:
            return
        try:
            nodes = await self._run(self.api().list_nodes)
        except KubernetesApiError as exc:
            if exc.status != 403:
                raise
            # Listing nodes is only for the hosts of INFO; without the permission the rest still works.
            self._nodes_forbidden = True
            log.warning("kubernetes_nodes_forbidden", message=exc.message)
            return
        self._hosts = [_node_host(node) for node in nodes]

    # --- the interface -------------------------------------------------------------------------

    def check(self, spec: TopologySpec) -> None:
        """Pod-name rules, the vhost bound, and a usable cluster configuration."""
        if spec.number_of_vhosts > self.options.max_vhosts:
            raise InvalidArgument(
                "config.number_of_vhosts",
                f"the kubernetes backend runs one pod per vhost and is limited to {self.options.max_vhosts} "
                f"(MERAK_KUBERNETES_MAX_VHOSTS), got {spec.number_of_vhosts}",
            )
        for i, vnode in enumerate(spec.vnodes):
            if not _DNS_LABEL.fullmatch(vnode.name):
                raise InvalidArgument(
                    f"config.vnodes[{i}].name",
                    f"{vnode.name!r} must be a pod name: lowercase letters, digits and '-', "
                    "starting and ending with a letter or digit",
                )
        namespace = self.namespace(spec)
        if len(namespace) > MAX_DNS_LABEL or not _DNS_LABEL.fullmatch(namespace):
            raise FailedPrecondition(
                f"namespace {namespace!r} (MERAK_KUBERNETES_NAMESPACE_PREFIX + short id) is not a valid "
                "namespace name"
            )
        self.api()

    async def deploy(self, topology: Topology, on_ready: ReadyCallback) -> None:
        """Namespace, meshnet resources, pods; then wait until every pod is ready (idempotent)."""
        spec = topology.spec
        started = time.perf_counter()
        api = self.api()
        objects = build_objects(topology, self.options, await self._images(spec.topology_id))
        namespace = self.namespace(spec)
        if not await self._run(api.create_namespace, objects.namespace):
            await self._check_owned(namespace, spec, deploying=True)
        await self._refresh_hosts()
        await asyncio.gather(
            *(self._run(api.create_topology, namespace, body) for body in objects.topologies)
        )
        await asyncio.gather(*(self._run(api.create_pod, namespace, body) for body in objects.pods))
        log.info(
            "kubernetes_objects_created",
            topology_id=spec.topology_id,
            namespace=namespace,
            pods=len(objects.pods),
            meshnet_topologies=len(objects.topologies),
            seconds=round(time.perf_counter() - started, 3),
        )
        await self._wait_ready(
            topology, namespace, [pod["metadata"]["name"] for pod in objects.pods], on_ready
        )
        log.info(
            "topology_deployed",
            topology_id=spec.topology_id,
            namespace=namespace,
            pods=len(objects.pods),
            dataplane=spec.dataplane,
            seconds=round(time.perf_counter() - started, 3),
        )

    async def _check_owned(
        self, namespace: str, spec: TopologySpec, *, deploying: bool
    ) -> dict[str, Any] | None:
        """The namespace if it is this topology's; FailedPrecondition if someone else's or being deleted."""
        current = await self._run(self.api().read_namespace, namespace)
        if current is None:
            return None
        annotations = (current.get("metadata") or {}).get("annotations") or {}
        owner = annotations.get(ANNOTATION_TOPOLOGY_ID)
        if owner != spec.topology_id:
            raise FailedPrecondition(
                f"namespace {namespace} exists and does not belong to topology {spec.topology_id!r} "
                f"(its {ANNOTATION_TOPOLOGY_ID} is {owner!r}); delete it or change "
                "MERAK_KUBERNETES_NAMESPACE_PREFIX"
            )
        if deploying and (current.get("status") or {}).get("phase") == "Terminating":
            raise Unavailable(
                f"namespace {namespace} is still being deleted; create the topology again later"
            )
        return current

    async def _wait_ready(
        self, topology: Topology, namespace: str, expected: list[str], on_ready: ReadyCallback
    ) -> None:
        vhosts = {node.name for node in topology.vhosts()}
        reported: set[str] = set()
        selector = f"{LABEL_TOPOLOGY}={topology.spec.short_id}"
        deadline = time.monotonic() + self.options.ready_timeout
        while True:
            pods = await self._run(self.api().list_pods, namespace, selector)
            states = {pod["metadata"]["name"]: pod_state(pod) for pod in pods}
            newly = sorted(n for n in vhosts - reported if n in states and states[n].ready)
            if newly:
                reported.update(newly)
                await on_ready(newly)
            failed = [name for name in expected if name in states and states[name].failed]
            if failed:
                raise FailedPrecondition(f"pods failed in namespace {namespace}: " + ", ".join(failed[:10]))
            waiting = [name for name in expected if name not in states or not states[name].ready]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                detail = ", ".join(
                    f"{name} ({states[name].why if name in states else 'missing'})" for name in waiting[:10]
                )
                raise DeadlineExceeded(
                    f"{len(waiting)} of {len(expected)} pods in namespace {namespace} not ready after "
                    f"{self.options.ready_timeout:.0f}s: {detail}"
                )
            await asyncio.sleep(self.options.poll_interval)

    async def inspect(self, topology: Topology, built: bool) -> dict[str, VhostRuntime]:
        """Every vhost from its pod, read now: pod IP (agent endpoint), node, readiness."""
        spec = topology.spec
        selector = f"{LABEL_TOPOLOGY}={spec.short_id},{LABEL_ROLE}={ROLE_VHOST}"
        pods, _ = await asyncio.gather(
            self._run(self.api().list_pods, self.namespace(spec), selector), self._refresh_hosts()
        )
        states = {pod["metadata"]["name"]: pod_state(pod) for pod in pods}
        result: dict[str, VhostRuntime] = {}
        for node in topology.vhosts():
            state = states.get(node.name)
            if state is None:
                status = common_pb2.ERROR if built else common_pb2.DEPLOYING
                result[node.name] = VhostRuntime(status=status, detail="pod missing" if built else "")
                continue
            if state.deleting:
                status, detail = common_pb2.DELETING, state.why
            elif state.ready:
                status, detail = common_pb2.READY, ""
            elif built or state.failed:
                status, detail = common_pb2.ERROR, state.why
            else:
                status, detail = common_pb2.DEPLOYING, state.why
            result[node.name] = VhostRuntime(
                status=status,
                agent_endpoint=f"{state.ip}:{AGENT_PORT}" if state.ip else "",
                container_ip=state.ip,
                hostname=state.node,
                detail=detail,
            )
        return result

    def hosts(self) -> list[HostRuntime]:
        """The cluster's nodes as last read (every deploy and inspect reads them)."""
        return list(self._hosts)

    async def destroy(self, spec: TopologySpec) -> DestroyReport:
        """Delete the topology's namespace (its pods and meshnet resources with it); wait until it is gone."""
        api = self.api()
        namespace = self.namespace(spec)
        if await self._check_owned(namespace, spec, deploying=False) is None:
            return DestroyReport()
        pods = await self._run(api.list_pods, namespace, f"{LABEL_TOPOLOGY}={spec.short_id}")
        started = time.perf_counter()
        await self._run(api.delete_namespace, namespace)
        deadline = time.monotonic() + self.options.delete_timeout
        while await self._run(api.read_namespace, namespace) is not None:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded(
                    f"namespace {namespace} still exists {self.options.delete_timeout:.0f}s after its "
                    "deletion (`kubectl get ns -o yaml` shows what holds it: finalizers, a stuck node)"
                )
            await asyncio.sleep(self.options.poll_interval)
        vhost_pods = sum(
            1 for pod in pods if (pod["metadata"].get("labels") or {}).get(LABEL_ROLE) == ROLE_VHOST
        )
        log.info(
            "topology_destroyed",
            topology_id=spec.topology_id,
            namespace=namespace,
            pods=len(pods),
            seconds=round(time.perf_counter() - started, 3),
        )
        # Every pod is a network namespace; every vhost pod ran an agent.
        return DestroyReport(namespaces=len(pods), processes=vhost_pods)

    async def close(self) -> None:
        """Stop the API threads and close the connection pool."""
        self._executor.shutdown(wait=True)
        if self._api is not None:
            self._api.close()
            self._api = None
