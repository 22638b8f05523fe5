"""The topology service with `backend: kubernetes`: gRPC, Redis, app.py's registry, the fake API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from merak.v1 import common_pb2, topology_pb2, topology_pb2_grpc
from services.topology.app import build
from services.topology.config import TopologySettings
from services.topology.manager import TopologyManager
from tests.fakes.kubernetes_api import FakeKubernetes
from tests.kubernetes.conftest import e2e_config
from tests.support import assert_eventually, unique_name
from tests.support.plugin import ServeBuilt


@dataclass
class Service:
    """A topology service on a real gRPC server, and the fake cluster behind it."""

    stub: topology_pb2_grpc.MerakTopologyServiceAsyncStub
    fake: FakeKubernetes


async def _start(
    serve_built: ServeBuilt, redis_url: str, settings: TopologySettings
) -> tuple[topology_pb2_grpc.MerakTopologyServiceAsyncStub, TopologyManager, grpc.aio.Channel]:
    """The topology service as its process builds it (127.0.0.1:0, the test's Redis)."""
    built = await build(
        settings.model_copy(update={"host": "127.0.0.1", "grpc_port": 0, "redis_url": redis_url})
    )
    channel = grpc.aio.insecure_channel(await serve_built(built))
    return topology_pb2_grpc.MerakTopologyServiceStub(channel), built.root, channel


@pytest.fixture
async def service(
    serve_built: ServeBuilt, redis_url: str, fake_api: FakeKubernetes, tmp_path: Path
) -> AsyncIterator[Service]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(fake_api.kubeconfig())
    settings = TopologySettings(
        run_dir=tmp_path / "run",
        kubeconfig=str(kubeconfig),
        kubernetes_poll_interval=0.02,
        kubernetes_ready_timeout=10,
        kubernetes_delete_timeout=10,
        kubernetes_vhost_image="registry.example/merak:1.0",
    )
    stub, manager, channel = await _start(serve_built, redis_url, settings)
    try:
        yield Service(stub, fake_api)
    finally:
        for topology_id in await manager.store.ids():
            await manager.delete(topology_id)
        await channel.close(None)


async def call(
    stub: topology_pb2_grpc.MerakTopologyServiceAsyncStub,
    op: common_pb2.OperationType.ValueType,
    config: topology_pb2.InternalTopologyConfiguration,
) -> topology_pb2.ReturnTopologyMessage:
    return await stub.TopologyHandler(topology_pb2.InternalTopologyInfo(operation_type=op, config=config))


async def test_teste2e_on_kubernetes_creates_reports_pod_endpoints_and_deletes(service: Service) -> None:
    config = e2e_config(unique_name("k-"))
    # Merak's image rule: the image whose name says ACA runs the vhosts, OVS the switches.
    config.images.add(name="ACA", registry="registry.example/agent:2")
    config.images.add(name="OVS", registry="registry.example/bridge:2")
    reply = await call(service.stub, common_pb2.CREATE, config)
    assert reply.return_code == common_pb2.OK
    assert [n.name for n in reply.compute_nodes] == [f"vhost-{i}" for i in range(5)]

    async def ready() -> topology_pb2.ReturnTopologyMessage | None:
        info = await call(service.stub, common_pb2.INFO, config)
        return info if all(n.status == common_pb2.READY for n in info.compute_nodes) else None

    info: topology_pb2.ReturnTopologyMessage = await assert_eventually(
        ready, timeout=10, interval=0.05, message="pods not READY"
    )
    for node in info.compute_nodes:
        assert node.backend == "kubernetes"
        assert node.agent_endpoint == f"{node.container_ip}:40054"
        assert node.hostname.startswith("worker-")
    assert sorted(h.name for h in info.hosts) == ["worker-0", "worker-1", "worker-2"]
    assert "READY: 5" in info.return_message

    namespaces = list(service.fake.state.namespaces)
    assert len(namespaces) == 1
    pods = {p["metadata"]["name"]: p for p in service.fake.pods(namespaces[0])}
    assert pods["vhost-0"]["spec"]["containers"][0]["image"] == "registry.example/agent:2"
    assert pods["rack-1"]["spec"]["containers"][0]["image"] == "registry.example/bridge:2"

    deleted = await call(service.stub, common_pb2.DELETE, config)
    assert deleted.return_code == common_pb2.OK
    assert "8 namespaces and 5 agents removed" in deleted.return_message
    assert service.fake.state.namespaces == {}


async def test_settings_images_are_the_default(service: Service) -> None:
    config = e2e_config(unique_name("k-"), dataplane="fake")
    await call(service.stub, common_pb2.CREATE, config)

    def images() -> set[str] | None:
        pods = [p for ns in list(service.fake.state.namespaces) for p in service.fake.pods(ns)]
        return {p["spec"]["containers"][0]["image"] for p in pods} if len(pods) == 5 else None

    seen: set[str] = await assert_eventually(images, timeout=10)
    assert seen == {"registry.example/merak:1.0"}


async def test_without_a_cluster_the_kubernetes_backend_is_a_failed_precondition_and_local_still_works(
    serve_built: ServeBuilt, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    stub, manager, channel = await _start(serve_built, redis_url, TopologySettings(run_dir=tmp_path / "run"))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(stub, common_pb2.CREATE, e2e_config(unique_name("k-")))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no cluster to talk to" in (caught.value.details() or "")
        # Nothing was stored, and the local backend is untouched by the missing cluster.
        assert await manager.store.ids() == []
        local = e2e_config(unique_name("l-"), dataplane="fake")
        local.backend = "local"
        reply = await call(stub, common_pb2.CREATE, local)
        assert reply.return_code == common_pb2.OK
        await call(stub, common_pb2.DELETE, local)
    finally:
        await channel.close(None)
