"""The kubernetes backend's objects against the Kubernetes OpenAPI schemas and meshnet's CRD schema."""

from __future__ import annotations

import copy
import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from merak.errors import FailedPrecondition, InvalidArgument
from merak.v1 import topology_pb2
from services.agent.vhosts import VhostSet
from services.topology.backends.kubernetes import KubernetesBackend
from services.topology.backends.kubernetes.objects import (
    AGENT_PORT,
    ANNOTATION_TOPOLOGY_ID,
    LABEL_ROLE,
    LABEL_TOPOLOGY,
    Images,
    KubernetesOptions,
    Resources,
    TopologyObjects,
    build_objects,
    meshnet_links,
    pod_state,
    resolve_images,
)
from services.topology.generator import generate, spec_from_proto
from services.topology.models import vhost_mac
from tests.fakes.kubernetes_api import CRD_FILE, KUBERNETES_VERSION, meshnet_schema
from tests.kubernetes.conftest import e2e_config, e2e_topology

OPTIONS = KubernetesOptions()
IMAGES = OPTIONS.default_images


def strict_meshnet_schema() -> dict[str, Any]:
    """meshnet's schema, with unknown link fields forbidden.

    A structural CRD schema prunes unknown fields silently, so a misspelt key ("peer-pod") would be
    accepted by the API server and leave the link unmade; the strict copy catches that here.
    """
    schema = copy.deepcopy(meshnet_schema())
    schema["properties"]["spec"]["properties"]["links"]["items"]["additionalProperties"] = False
    schema["properties"]["spec"]["additionalProperties"] = False
    return schema


def objects(dataplane: str = "real") -> TopologyObjects:
    return build_objects(e2e_topology(dataplane=dataplane), OPTIONS, IMAGES)


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}


def by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["metadata"]["name"]: item for item in items}


# --- schemas ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataplane", ["real", "fake"])
def test_namespace_and_pods_validate_against_the_kubernetes_schemas(dataplane: str) -> None:
    generated = objects(dataplane)
    for obj in [generated.namespace, *generated.pods]:
        # strict: unknown fields are errors, as `kubectl apply --validate=strict` would say.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_broken_pod() -> None:
    pod = copy.deepcopy(by_name(objects().pods)["vhost-0"])
    pod["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "forty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_meshnet_resources_validate_against_the_crd_schema() -> None:
    generated = objects()
    assert generated.topologies
    for obj in generated.topologies:
        jsonschema.validate(obj, meshnet_schema())
        jsonschema.validate(obj, strict_meshnet_schema())
        assert obj["apiVersion"] == "networkop.co.uk/v1beta1"
        assert obj["kind"] == "Topology"


def test_the_strict_crd_schema_rejects_a_misspelt_link_field() -> None:
    obj = copy.deepcopy(objects().topologies[0])
    obj["spec"]["links"][0]["peer-pod"] = obj["spec"]["links"][0].pop("peer_pod")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, meshnet_schema())  # peer_pod is required
    del obj["spec"]["links"][0]["peer-pod"]
    obj["spec"]["links"][0]["peer_pod"] = "vhost-0"
    obj["spec"]["links"][0]["localIntf"] = "eth9"
    jsonschema.validate(obj, meshnet_schema())  # meshnet itself would prune it silently
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, strict_meshnet_schema())


def test_the_meshnet_crd_document_is_a_valid_crd() -> None:
    crd = yaml.safe_load(Path(CRD_FILE).read_text())
    kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True)
    assert crd["metadata"]["name"] == "topologies.networkop.co.uk"


# --- meshnet link semantics on the teste2e topology ------------------------------------------------------


def test_teste2e_has_one_meshnet_resource_and_one_pod_per_node() -> None:
    topology = e2e_topology()
    generated = objects()
    names = sorted(node.name for node in topology.nodes)
    assert names == ["core-1", "rack-1", "vhost-0", "vhost-1", "vhost-2", "vhost-3", "vhost-4", "vs-1"]
    assert sorted(by_name(generated.topologies)) == names
    assert sorted(by_name(generated.pods)) == names
    # A pod and its Topology resource share name and namespace: that is how meshnet pairs them.
    namespace = generated.namespace["metadata"]["name"]
    assert {o["metadata"]["namespace"] for o in generated.topologies + generated.pods} == {namespace}


def test_teste2e_links_appear_on_both_ends_with_the_same_uid_and_swapped_ends() -> None:
    generated = by_name(objects().topologies)
    entries = [(name, link) for name, obj in generated.items() for link in obj["spec"]["links"]]
    uids = Counter(link["uid"] for _, link in entries)
    # Merak's numbering: 1-5 rack-vhost, 6 vswitch-rack, 7 core-vswitch; each on exactly two ends.
    assert sorted(uids) == [1, 2, 3, 4, 5, 6, 7]
    assert set(uids.values()) == {2}
    for name, link in entries:
        peer = generated[link["peer_pod"]]
        mirrored = [p for p in peer["spec"]["links"] if p["uid"] == link["uid"]]
        assert len(mirrored) == 1, f"uid {link['uid']} of {name} is missing on {link['peer_pod']}"
        other = mirrored[0]
        assert other["peer_pod"] == name
        assert other["local_intf"] == link["peer_intf"]
        assert other["peer_intf"] == link["local_intf"]
        assert other.get("local_ip") == link.get("peer_ip")
        assert other.get("peer_ip") == link.get("local_ip")


def test_teste2e_vhost_links_carry_the_data_plane_addresses() -> None:
    links = meshnet_links(e2e_topology())
    assert links["vhost-0"] == [
        {
            "uid": 1,
            "peer_pod": "rack-1",
            "local_intf": "vh0-eth1",
            "peer_intf": "r1-eth1",
            "local_ip": "10.200.0.1/16",
        }
    ]
    rack_side = next(link for link in links["rack-1"] if link["uid"] == 5)
    assert rack_side == {
        "uid": 5,
        "peer_pod": "vhost-4",
        "local_intf": "r1-eth5",
        "peer_intf": "vh4-eth1",
        "peer_ip": "10.200.0.5/16",
    }
    assert [link["peer_pod"] for link in links["core-1"]] == ["vs-1"]


def test_every_link_of_a_large_tree_is_mirrored() -> None:
    config = e2e_config()
    config.number_of_vhosts, config.number_of_racks, config.vhost_per_rack, config.ports_per_vswitch = (
        300,
        0,
        20,
        4,
    )
    links = meshnet_links(generate(spec_from_proto(config)))
    ends = Counter((link["uid"]) for entries in links.values() for link in entries)
    assert set(ends.values()) == {2}
    pairs = {
        (node, link["local_intf"], link["peer_pod"], link["peer_intf"])
        for node, entries in links.items()
        for link in entries
    }
    assert all((peer, peer_intf, node, intf) in pairs for node, intf, peer, peer_intf in pairs)


# --- the pods ------------------------------------------------------------------------------------------


def test_vhost_pods_run_a_privileged_agent_with_a_grpc_readiness_probe() -> None:
    pod = by_name(objects().pods)["vhost-3"]
    container = pod["spec"]["containers"][0]
    assert container["securityContext"]["privileged"] is True
    assert "NET_ADMIN" in container["securityContext"]["capabilities"]["add"]
    assert container["readinessProbe"]["grpc"] == {"port": AGENT_PORT}
    assert {p["containerPort"] for p in container["ports"]} == {40054, 9054, 50001}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9054"
    assert pod["metadata"]["labels"][LABEL_ROLE] == "vhost"
    spread = pod["spec"]["topologySpreadConstraints"][0]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()


def test_the_vhost_pod_hands_the_agent_a_vhosts_file_it_can_load(tmp_path: Path) -> None:
    topology = e2e_topology()
    env = env_of(by_name(objects().pods)["vhost-3"])
    path = tmp_path / "vhosts.json"
    path.write_text(env["MERAK_VHOSTS_JSON"])
    vhosts = VhostSet.load(path)
    vhost = vhosts.get("")
    assert vhosts.topology_id == topology.spec.topology_id
    assert vhosts.dataplane == "real"
    assert (vhost.name, vhost.index, vhost.datapath_ip, vhost.prefix_len, vhost.nic) == (
        "vhost-3",
        3,
        "10.200.0.4",
        16,
        "vh3-eth1",
    )
    assert vhost.mac == vhost_mac(topology.spec.short_id, 3)
    # The pod names its own network namespace so, and sets the NIC the agent will use as underlay.
    assert env["MERAK_VHOST_NETNS"] == vhost.netns
    assert env["MERAK_NICS"] == "vh3-eth1"
    assert env["MERAK_NIC_ADDRESSES"] == "vh3-eth1=10.200.0.4/16"
    assert env["MERAK_NIC_MAC"] == f"vh3-eth1={vhost.mac}"
    assert env["MERAK_GRPC_PORT"] == str(AGENT_PORT)


def test_switch_pods_bridge_exactly_their_linked_interfaces() -> None:
    pods = by_name(objects().pods)
    assert env_of(pods["rack-1"])["MERAK_NICS"] == "r1-eth1 r1-eth2 r1-eth3 r1-eth4 r1-eth5 r1-eth6"
    assert env_of(pods["vs-1"])["MERAK_NICS"] == "vs1-eth1 vs1-eth2"
    assert env_of(pods["core-1"])["MERAK_NICS"] == "c1-eth1"
    container = pods["rack-1"]["spec"]["containers"][0]
    assert "ip link add br0 type bridge" in container["command"][-1]
    assert pods["rack-1"]["metadata"]["labels"][LABEL_ROLE] == "switch"


def test_fake_dataplane_makes_vhost_pods_only_and_waits_for_no_interface(tmp_path: Path) -> None:
    generated = objects("fake")
    assert generated.topologies == []
    assert sorted(by_name(generated.pods)) == [f"vhost-{i}" for i in range(5)]
    env = env_of(generated.pods[0])
    assert env["MERAK_NICS"] == env["MERAK_VHOST_NETNS"] == env["MERAK_NIC_MAC"] == ""
    path = tmp_path / "vhosts.json"
    path.write_text(env["MERAK_VHOSTS_JSON"])
    assert VhostSet.load(path).dataplane == "fake"


def test_namespace_is_per_topology_and_admits_privileged_pods() -> None:
    topology = e2e_topology("lab-a")
    namespace = build_objects(topology, OPTIONS, IMAGES).namespace
    other = build_objects(e2e_topology("lab-b"), OPTIONS, IMAGES).namespace
    assert namespace["metadata"]["name"] == f"merak-{topology.spec.short_id}"
    assert namespace["metadata"]["name"] != other["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert namespace["metadata"]["labels"][LABEL_TOPOLOGY] == topology.spec.short_id
    assert namespace["metadata"]["annotations"][ANNOTATION_TOPOLOGY_ID] == "lab-a"


def test_images_and_resources_reach_the_pods() -> None:
    options = KubernetesOptions(
        vhost_resources=Resources("2", "1Gi", "4", "2Gi"), switch_resources=Resources(memory="32Mi")
    )
    pods = by_name(build_objects(e2e_topology(), options, Images("reg/agent:1", "reg/bridge:1")).pods)
    vhost, switch = pods["vhost-0"]["spec"]["containers"][0], pods["rack-1"]["spec"]["containers"][0]
    assert vhost["image"] == "reg/agent:1"
    assert switch["image"] == "reg/bridge:1"
    assert vhost["resources"] == {
        "requests": {"cpu": "2", "memory": "1Gi"},
        "limits": {"cpu": "4", "memory": "2Gi"},
    }
    assert switch["resources"] == {"requests": {"memory": "32Mi"}}


def test_agent_env_from_the_settings_reaches_every_agent() -> None:
    options = KubernetesOptions(agent_env={"MERAK_ALCOR_URL": "http://alcor:30006", "MERAK_GRPC_PORT": "1"})
    pods = build_objects(e2e_topology(), options, IMAGES).pods
    vhosts = [p for p in pods if p["metadata"]["labels"][LABEL_ROLE] == "vhost"]
    assert all(env_of(p)["MERAK_ALCOR_URL"] == "http://alcor:30006" for p in vhosts)
    # The backend's own variables win: the probe and the endpoint depend on the agent's port.
    assert all(env_of(p)["MERAK_GRPC_PORT"] == str(AGENT_PORT) for p in vhosts)
    assert "MERAK_ALCOR_URL" not in env_of(next(p for p in pods if p["metadata"]["name"] == "rack-1"))


# --- images of a topology config --------------------------------------------------------------------------

DEFAULTS = Images("merak:latest", "merak:latest")


def image(
    name: str, registry: str = "", kind: int = topology_pb2.VHOST
) -> topology_pb2.InternalTopologyImage:
    return topology_pb2.InternalTopologyImage(name=name, registry=registry, type=kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ([], DEFAULTS),
        # Merak's rule: "ACA" in the name is the vhost image, "OVS" the switch image; registry is the ref.
        ([image("ACA", "reg/aca:1"), image("OVS", "reg/ovs:1")], Images("reg/aca:1", "reg/ovs:1")),
        ([image("merak-agent", "reg/a:2")], Images("reg/a:2", "merak:latest")),
        ([image("linux-bridge", "reg/b:3")], Images("merak:latest", "reg/b:3")),
        # No telling name: the VNodeType decides; an empty registry means the name is the reference.
        ([image("busybox:1.36", kind=topology_pb2.VSWITCH)], Images("merak:latest", "busybox:1.36")),
        ([image("custom", "reg/c:1")], Images("reg/c:1", "merak:latest")),
        # The first match of each kind wins.
        ([image("ACA", "first"), image("ACA", "second")], Images("first", "merak:latest")),
    ],
)
def test_images_are_picked_by_name_then_type(
    configured: list[topology_pb2.InternalTopologyImage], expected: Images
) -> None:
    assert resolve_images(configured, DEFAULTS) == expected


# --- pod state -------------------------------------------------------------------------------------------


def test_pod_state_reads_readiness_and_the_reason_it_is_not_ready() -> None:
    ready = {
        "metadata": {"name": "vhost-0"},
        "spec": {"nodeName": "worker-1"},
        "status": {
            "phase": "Running",
            "podIP": "10.244.1.5",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    state = pod_state(ready)
    assert (state.ready, state.ip, state.node, state.why) == (True, "10.244.1.5", "worker-1", "")
    pulling = {
        "metadata": {"name": "vhost-0"},
        "spec": {},
        "status": {
            "phase": "Pending",
            "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}],
        },
    }
    assert pod_state(pulling).why == "ImagePullBackOff"
    unscheduled = {
        "metadata": {"name": "vhost-0"},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/3 nodes are available"}],
        },
    }
    assert pod_state(unscheduled).why == "unscheduled: 0/3 nodes are available"
    deleting = {
        "metadata": {"name": "x", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        **{"status": ready["status"]},
    }
    assert (pod_state(deleting).ready, pod_state(deleting).deleting) == (False, True)


# --- check(): limits, before any cluster is asked ----------------------------------------------------------


def test_check_bounds_the_vhost_count() -> None:
    backend = KubernetesBackend(KubernetesOptions(max_vhosts=4))
    with pytest.raises(InvalidArgument) as caught:
        backend.check(e2e_topology().spec)
    assert caught.value.field == "config.number_of_vhosts"


def test_check_wants_pod_names_for_custom_nodes() -> None:
    config = topology_pb2.InternalTopologyConfiguration(
        topology_id="custom", topology_type=topology_pb2.CUSTOM, data_plane_cidr="10.0.0.0/24"
    )
    config.vnodes.add(name="h1", type=topology_pb2.VHOST).vnics.add(name="h1-eth0", ip="10.0.0.1/24")
    config.vnodes.add(name="sw-", type=topology_pb2.VSWITCH)
    config.vlinks.add(name="l1", src="h1-eth0", dst="sw-")
    backend = KubernetesBackend(KubernetesOptions())
    with pytest.raises(InvalidArgument) as caught:
        backend.check(spec_from_proto(config))
    assert caught.value.field == "config.vnodes[1].name"


def test_check_refuses_a_namespace_prefix_that_makes_no_namespace_name() -> None:
    backend = KubernetesBackend(KubernetesOptions(namespace_prefix="Merak_"))
    with pytest.raises(FailedPrecondition, match="not a valid namespace name"):
        backend.check(e2e_topology().spec)


def test_objects_are_json_serialisable_as_the_client_sends_them() -> None:
    generated = objects()
    for obj in [generated.namespace, *generated.topologies, *generated.pods]:
        assert json.loads(json.dumps(obj)) == obj
