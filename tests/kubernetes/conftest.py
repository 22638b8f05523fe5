"""Fixtures of the kubernetes backend tests: the fake API server; a real cluster when KUBECONFIG is set."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from kubernetes.client import Configuration

from merak.v1 import topology_pb2
from services.topology.backends.kubernetes import KubernetesBackend, KubernetesOptions
from services.topology.generator import generate, spec_from_proto
from services.topology.models import Topology
from tests.fakes.kubernetes_api import FakeKubernetes
from tests.support import unique_name


def e2e_config(
    topology_id: str = "teste2e", dataplane: str = "real"
) -> topology_pb2.InternalTopologyConfiguration:
    """Merak's teste2e topology: 5 vhosts, 2 racks, 5 per rack, 5 ports per switch, 10.200.0.0/16."""
    return topology_pb2.InternalTopologyConfiguration(
        topology_id=topology_id,
        name="teste2e",
        topology_type=topology_pb2.TREE,
        number_of_vhosts=5,
        number_of_racks=2,
        vhost_per_rack=5,
        ports_per_vswitch=5,
        data_plane_cidr="10.200.0.0/16",
        backend="kubernetes",
        dataplane=dataplane,
    )


def e2e_topology(topology_id: str = "teste2e", dataplane: str = "real") -> Topology:
    """The generated teste2e topology."""
    return generate(spec_from_proto(e2e_config(topology_id, dataplane)))


@dataclass
class Cluster:
    """Where the backend under test talks: the fake API server (`fake` set) or a real cluster."""

    options: KubernetesOptions
    configuration: Configuration | None
    fake: FakeKubernetes | None

    def backend(self, **overrides: Any) -> KubernetesBackend:
        """A backend on this cluster, with some options changed."""
        return KubernetesBackend(replace(self.options, **overrides), configuration=self.configuration)


def fake_configuration(fake: FakeKubernetes) -> Configuration:
    """A client configuration pointing at the fake API server."""
    configuration = Configuration()
    configuration.host = fake.url
    return configuration


FAKE_OPTIONS = KubernetesOptions(
    poll_interval=0.02, ready_timeout=10.0, delete_timeout=10.0, request_timeout=5.0
)


@pytest.fixture
def fake_api() -> Iterator[FakeKubernetes]:
    """The fake API server."""
    with FakeKubernetes() as fake:
        yield fake


@pytest.fixture(params=["fake", pytest.param("cluster", marks=pytest.mark.cluster)])
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The fake API server, then a real cluster (only when KUBECONFIG is set; skipped otherwise)."""
    if request.param == "fake":
        with FakeKubernetes() as fake:
            yield Cluster(FAKE_OPTIONS, fake_configuration(fake), fake)
        return
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig:
        pytest.skip(
            "no KUBECONFIG: the contract tests run against a real cluster only when KUBECONFIG names one"
        )
    options = KubernetesOptions(
        kubeconfig=kubeconfig,
        namespace_prefix="merak-test-",
        vhost_image=os.environ.get("MERAK_TEST_KUBERNETES_IMAGE", "merak:dev"),
        ready_timeout=float(os.environ.get("MERAK_TEST_KUBERNETES_TIMEOUT", "600")),
        poll_interval=1.0,
    )
    yield Cluster(options, None, None)


@pytest.fixture
async def backend(cluster: Cluster) -> AsyncIterator[KubernetesBackend]:
    """A backend on the cluster, closed after the test."""
    backend = cluster.backend()
    try:
        yield backend
    finally:
        await backend.close()


@pytest.fixture
def topology_id() -> str:
    """A topology id no other test (or earlier run on a real cluster) uses."""
    return unique_name("k8s", 8)
