"""The kubernetes backend against an API server: the fake one here, a real cluster too when KUBECONFIG is set.

The same tests run on both; what only the fake can do (refuse, stall, fail on purpose) is in
test_backend_failures.py.
"""

from __future__ import annotations

import pytest

from merak.errors import FailedPrecondition
from merak.v1 import common_pb2
from services.topology.backends.kubernetes import KubernetesBackend
from services.topology.backends.kubernetes.api import KubernetesApiError
from services.topology.backends.kubernetes.objects import AGENT_PORT, LABEL_ROLE, build_objects
from tests.kubernetes.conftest import Cluster, e2e_topology


class Ready:
    """Collects the vhost names the backend reports ready."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def __call__(self, names: list[str]) -> None:
        self.names.extend(names)


def skip_without_meshnet(backend: KubernetesBackend) -> None:
    try:
        backend.api().list_topologies("default")
    except KubernetesApiError as exc:
        if exc.status == 404:
            pytest.skip("meshnet's Topology CRD is not installed in this cluster")
        raise


async def test_fake_dataplane_pods_become_agents_with_endpoints_and_go_with_their_namespace(
    backend: KubernetesBackend, topology_id: str
) -> None:
    topology = e2e_topology(topology_id, dataplane="fake")
    backend.check(topology.spec)
    ready = Ready()
    try:
        await backend.deploy(topology, ready)
        assert sorted(ready.names) == [f"vhost-{i}" for i in range(5)]

        runtime = await backend.inspect(topology, built=True)
        assert sorted(runtime) == sorted(ready.names)
        for state in runtime.values():
            assert state.status == common_pb2.READY
            assert state.agent_endpoint == f"{state.container_ip}:{AGENT_PORT}"
            assert state.hostname, "the node a vhost runs on is its hostname"
        nodes = {host.name for host in backend.hosts()}
        assert {state.hostname for state in runtime.values()} <= nodes
        namespace = backend.namespace(topology.spec)
        assert backend.api().read_namespace(namespace) is not None
        # No links without a real dataplane: no meshnet resources, no switch pods.
        assert backend.api().list_topologies(namespace) == []
        roles = {p["metadata"]["labels"][LABEL_ROLE] for p in backend.api().list_pods(namespace)}
        assert roles == {"vhost"}
    finally:
        report = await backend.destroy(topology.spec)
    assert (report.namespaces, report.processes) == (5, 5)
    assert backend.api().read_namespace(backend.namespace(topology.spec)) is None
    gone = await backend.inspect(topology, built=True)
    assert {state.status for state in gone.values()} == {common_pb2.ERROR}
    assert {state.detail for state in gone.values()} == {"pod missing"}


async def test_real_dataplane_creates_the_meshnet_links_and_a_pod_per_node(
    cluster: Cluster, backend: KubernetesBackend, topology_id: str
) -> None:
    skip_without_meshnet(backend)
    topology = e2e_topology(topology_id)
    expected = build_objects(topology, backend.options, backend.options.default_images)
    ready = Ready()
    try:
        await backend.deploy(topology, ready)
        namespace = backend.namespace(topology.spec)
        stored = {t["metadata"]["name"]: t["spec"]["links"] for t in backend.api().list_topologies(namespace)}
        assert stored == {t["metadata"]["name"]: t["spec"]["links"] for t in expected.topologies}
        pods = {p["metadata"]["name"]: p for p in backend.api().list_pods(namespace)}
        assert sorted(pods) == sorted(node.name for node in topology.nodes)
        assert sorted(ready.names) == [f"vhost-{i}" for i in range(5)]
        if cluster.fake is not None:
            # What went over the wire is exactly the generated objects (the client added or dropped nothing).
            sent = {r.body["metadata"]["name"]: r.body for r in cluster.fake.requests("POST", "/pods")}
            assert sent == {p["metadata"]["name"]: p for p in expected.pods}
    finally:
        await backend.destroy(topology.spec)


async def test_deploy_is_idempotent(cluster: Cluster, backend: KubernetesBackend, topology_id: str) -> None:
    topology = e2e_topology(topology_id, dataplane="fake")
    try:
        await backend.deploy(topology, Ready())
        namespace = backend.namespace(topology.spec)
        before = {p["metadata"]["name"]: p["metadata"]["uid"] for p in backend.api().list_pods(namespace)}
        again = Ready()
        await backend.deploy(topology, again)  # as after a restart of the topology service
        after = {p["metadata"]["name"]: p["metadata"]["uid"] for p in backend.api().list_pods(namespace)}
        assert after == before, "a second deploy must keep the pods, not replace them"
        assert sorted(again.names) == sorted(before)
    finally:
        await backend.destroy(topology.spec)


async def test_destroy_is_idempotent(backend: KubernetesBackend, topology_id: str) -> None:
    topology = e2e_topology(topology_id, dataplane="fake")
    report = await backend.destroy(topology.spec)
    assert (report.namespaces, report.processes) == (0, 0)


async def test_a_namespace_of_someone_else_is_neither_used_nor_deleted(
    backend: KubernetesBackend, topology_id: str
) -> None:
    topology = e2e_topology(topology_id, dataplane="fake")
    namespace = backend.namespace(topology.spec)
    backend.api().create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    try:
        with pytest.raises(FailedPrecondition, match="does not belong to topology"):
            await backend.deploy(topology, Ready())
        with pytest.raises(FailedPrecondition, match="does not belong to topology"):
            await backend.destroy(topology.spec)
        assert backend.api().read_namespace(namespace) is not None
    finally:
        backend.api().delete_namespace(namespace)


async def test_hosts_are_the_cluster_nodes(backend: KubernetesBackend, topology_id: str) -> None:
    assert backend.hosts() == [], "nothing is known before the cluster was asked"
    await backend.inspect(e2e_topology(topology_id, dataplane="fake"), built=False)
    nodes = backend.api().list_nodes()
    assert sorted(h.name for h in backend.hosts()) == sorted(n["metadata"]["name"] for n in nodes)
    assert all(h.ip for h in backend.hosts())


async def test_inspect_before_the_build_reports_deploying(
    backend: KubernetesBackend, topology_id: str
) -> None:
    runtime = await backend.inspect(e2e_topology(topology_id, dataplane="fake"), built=False)
    assert {state.status for state in runtime.values()} == {common_pb2.DEPLOYING}
