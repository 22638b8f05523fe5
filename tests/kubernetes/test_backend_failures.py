"""The kubernetes backend when the cluster says no: only the fake API server fails on purpose."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from merak.errors import DeadlineExceeded, FailedPrecondition, Unavailable, status_for
from merak.v1 import common_pb2
from services.topology.backends.kubernetes import KubernetesBackend, KubernetesOptions
from services.topology.backends.kubernetes.api import KubernetesApiError, load_configuration
from tests.fakes.kubernetes_api import FakeKubernetes
from tests.kubernetes.conftest import FAKE_OPTIONS, e2e_topology, fake_configuration
from tests.support import assert_eventually, free_port


async def _nothing(_names: list[str]) -> None:
    return None


def backend_on(fake: FakeKubernetes, **changes: Any) -> KubernetesBackend:
    """A backend on the fake API server, with some timing options changed."""
    return KubernetesBackend(replace(FAKE_OPTIONS, **changes), configuration=fake_configuration(fake))


async def test_missing_meshnet_is_a_failed_precondition_that_says_so(fake_api: FakeKubernetes) -> None:
    fake_api.crd_installed = False
    backend = backend_on(fake_api)
    try:
        with pytest.raises(FailedPrecondition, match="meshnet is not installed"):
            await backend.deploy(e2e_topology(), _nothing)
        # The fake dataplane needs no meshnet.
        await backend.deploy(e2e_topology("fake-lab", dataplane="fake"), _nothing)
    finally:
        await backend.close()


async def test_forbidden_is_a_failed_precondition(fake_api: FakeKubernetes) -> None:
    fake_api.forbidden.append(("POST", r"^/api/v1/namespaces$"))
    backend = backend_on(fake_api)
    try:
        with pytest.raises(KubernetesApiError) as caught:
            await backend.deploy(e2e_topology(), _nothing)
        assert caught.value.status == 403
        assert status_for(caught.value)[0] == grpc.StatusCode.FAILED_PRECONDITION
        assert "forbidden" in caught.value.message
    finally:
        await backend.close()


async def test_listing_nodes_is_optional(fake_api: FakeKubernetes) -> None:
    fake_api.forbidden.append(("GET", r"^/api/v1/nodes$"))
    backend = backend_on(fake_api)
    try:
        await backend.deploy(e2e_topology(dataplane="fake"), _nothing)
        runtime = await backend.inspect(e2e_topology(dataplane="fake"), built=True)
        assert {state.status for state in runtime.values()} == {common_pb2.READY}
        assert backend.hosts() == []
    finally:
        await backend.close()


async def test_pods_that_never_get_ready_fail_the_deployment_with_the_reason(
    fake_api: FakeKubernetes,
) -> None:
    fake_api.never_ready_reason = "ImagePullBackOff"
    backend = backend_on(fake_api, ready_timeout=0.3)
    try:
        with pytest.raises(
            DeadlineExceeded, match=r"5 of 5 pods .* not ready .*vhost-0 \(ImagePullBackOff\)"
        ):
            await backend.deploy(e2e_topology(dataplane="fake"), _nothing)
        runtime = await backend.inspect(e2e_topology(dataplane="fake"), built=True)
        assert {(state.status, state.detail) for state in runtime.values()} == {
            (common_pb2.ERROR, "ImagePullBackOff")
        }
    finally:
        await backend.close()


async def test_a_namespace_that_never_goes_fails_destroy_at_its_deadline(fake_api: FakeKubernetes) -> None:
    backend = backend_on(fake_api, delete_timeout=1.0)
    topology = e2e_topology(dataplane="fake")
    try:
        await backend.deploy(topology, _nothing)
        fake_api.stuck_terminating = True
        # The deadline asked for (1 s, not FAKE_OPTIONS' 10 s) is the one that ended it.
        with pytest.raises(DeadlineExceeded, match="still exists 1s after its deletion"):
            await backend.destroy(topology.spec)
        # A deployment into the terminating namespace is refused until it is gone.
        with pytest.raises(Unavailable, match="still being deleted"):
            await backend.deploy(topology, _nothing)
        fake_api.stuck_terminating = False
        await backend.destroy(topology.spec)
    finally:
        await backend.close()


async def test_destroy_waits_until_the_namespace_is_gone(fake_api: FakeKubernetes) -> None:
    backend = backend_on(fake_api, delete_timeout=60.0)
    topology = e2e_topology(dataplane="fake")
    path = f"/api/v1/namespaces/{backend.namespace(topology.spec)}"

    def polls() -> int:
        """GETs of the namespace since it was deleted."""
        methods = [r.method for r in fake_api.requests() if r.path == path]
        deleted = methods.index("DELETE") if "DELETE" in methods else len(methods)
        return methods[deleted:].count("GET")

    destroy: asyncio.Task[Any] | None = None
    try:
        await backend.deploy(topology, _nothing)
        fake_api.stuck_terminating = True  # terminating until the test lets it go
        destroy = asyncio.create_task(backend.destroy(topology.spec))
        await assert_eventually(lambda: polls() >= 2, timeout=30, message="destroy polls the namespace")
        assert not destroy.done(), "destroy returned while the namespace was still there"
        waited = polls()  # each of them found it terminating
        fake_api.stuck_terminating = False
        await destroy
        assert fake_api.state.namespaces == {}
        assert polls() > waited, "destroy returned once a poll found the namespace gone"
    finally:
        if destroy is not None and not destroy.done():
            destroy.cancel()
        await backend.close()


async def test_an_unreachable_api_server_is_unavailable() -> None:
    with FakeKubernetes() as fake:
        configuration = fake_configuration(fake)
    configuration.host = f"http://127.0.0.1:{free_port()}"
    backend = KubernetesBackend(FAKE_OPTIONS, configuration=configuration)
    try:
        with pytest.raises(Unavailable, match="unreachable"):
            await backend.deploy(e2e_topology(), _nothing)
    finally:
        await backend.close()


def test_no_cluster_configuration_is_a_failed_precondition(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    backend = KubernetesBackend(KubernetesOptions())  # building it asks nothing
    with pytest.raises(FailedPrecondition, match="no cluster to talk to") as caught:
        backend.check(e2e_topology().spec)
    assert "KUBECONFIG" in caught.value.message


def test_a_kubeconfig_file_is_read(
    fake_api: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config"
    path.write_text(fake_api.kubeconfig())
    assert load_configuration(str(path)).host == fake_api.url
    # ... and $KUBECONFIG as it is now, not as it was when the client was imported.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert load_configuration().host == fake_api.url
    with pytest.raises(FailedPrecondition):
        load_configuration(str(path), context="no-such-context")
