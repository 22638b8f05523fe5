"""The emulator's services for a test: built by their own composition roots, served in this process.

One `ServiceStack` per test (the `services` fixture): each service is built as its process builds it
(`services.<name>.app.build`), listens on 127.0.0.1:0, and is wired to the others the way the local
stack wires them; what a test starts is stopped, and every topology it left is deleted, after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from temporalio.client import Client

from merak.grpcclient import open_channel
from merak.service import BuiltService
from merak.v1 import network_pb2_grpc
from services.compute import app as compute_app
from services.compute.config import ComputeSettings
from services.compute.manager import ComputeManager
from services.compute.store import ComputeStore
from services.network import app as network_app
from services.network.config import NetworkSettings
from services.network.manager import NetworkManager
from services.scenario import app as scenario_app
from services.scenario.config import ScenarioSettings
from services.scenario.manager import ScenarioManager
from services.topology import app as topology_app
from services.topology.config import TopologySettings
from services.topology.manager import TopologyManager
from tests.support import unique_name
from tests.support.plugin import ServeBuilt

LOCAL: dict[str, Any] = {"host": "127.0.0.1", "grpc_port": 0}


@dataclass
class ServiceStack:
    """The services a test started, their addresses, and what they share (Redis, Temporal, run dir)."""

    serve_built: ServeBuilt
    redis_url: str
    run_dir: Path
    temporal: Client | None = None
    # MERAK_CONTROL_PLANE_ALLOW of the topology (and its agents), network and compute services: the
    # Alcor stand-in's ports, for a test that runs one.
    control_plane_allow: str = ""
    addresses: dict[str, str] = field(default_factory=dict)
    built: dict[str, BuiltService[Any]] = field(default_factory=dict)
    task_queue: str = field(default_factory=lambda: f"compute-{unique_name('')}")
    _workers: list[tuple[compute_app.ComputeWorker, asyncio.Task[None]]] = field(default_factory=list)
    _closers: list[Any] = field(default_factory=list)

    def _temporal(self) -> Client:
        if self.temporal is None:
            raise RuntimeError("compute needs Temporal: use the `temporal_services` fixture")
        return self.temporal

    async def _serve(self, service: BuiltService[Any]) -> None:
        self.addresses[service.name] = await self.serve_built(service)
        self.built[service.name] = service

    def _allow(self, settings: dict[str, Any]) -> dict[str, Any]:
        """`settings` with the stack's control-plane allow-list unless they set their own."""
        return {"control_plane_allow": self.control_plane_allow, **settings}

    def registry(self, name: str) -> CollectorRegistry:
        """The metrics of a started service."""
        return self.built[name].registry

    async def topology(self, **settings: Any) -> TopologyManager:
        """The topology service on the local backend, agents under the test's run directory (and deleted
        labs' logs too, not in the user's state directory)."""
        settings = {"lab_log_dir": self.run_dir / "lab-logs", **settings}
        built = await topology_app.build(
            TopologySettings(**LOCAL, redis_url=self.redis_url, run_dir=self.run_dir, **self._allow(settings))
        )
        await self._serve(built)
        manager: TopologyManager = built.root
        return manager

    async def network(self, **settings: Any) -> NetworkManager:
        """The network service."""
        built = await network_app.build(
            NetworkSettings(**LOCAL, redis_url=self.redis_url, **self._allow(settings))
        )
        await self._serve(built)
        manager: NetworkManager = built.root
        return manager

    def compute_settings(self, **settings: Any) -> ComputeSettings:
        """Compute's settings in this stack: small batches and shards, a task queue of its own."""
        temporal = self._temporal()
        options: dict[str, Any] = {
            "network_address": self.addresses["network"],
            # Compute asks the topology service which agents it started (start topology first).
            "topology_address": self.addresses.get("topology", "127.0.0.1:1"),
            "task_queue": self.task_queue,
            "temporal_address": temporal.service_client.config.target_host,
            "temporal_namespace": temporal.namespace,
            "batch_size": 20,
            "hosts_per_shard": 2,
            **settings,
        }
        return ComputeSettings(**LOCAL, redis_url=self.redis_url, **self._allow(options))

    async def compute(self, **settings: Any) -> ComputeManager:
        """The compute service (needs the network service), without a worker: see `worker`."""
        built = await compute_app.build(self.compute_settings(**settings))
        await self._serve(built)
        manager: ComputeManager = built.root
        return manager

    async def worker(self, **settings: Any) -> compute_app.ComputeWorker:
        """A compute worker in this process, polling the stack's task queue until the test ends."""
        built = self.built["compute"]
        channel = open_channel(self.addresses["network"])
        self._closers.append(lambda: channel.close(None))
        worker = compute_app.build_worker(
            self.compute_settings(**settings),
            self._temporal(),
            ComputeStore(built.root.store.redis),
            network_pb2_grpc.MerakNetworkServiceStub(channel),
            built.registry,
        )
        self._workers.append((worker, asyncio.create_task(worker.run())))
        return worker

    async def scenario(self, **settings: Any) -> ScenarioManager:
        """The scenario service, calling the topology, network and compute services of this stack."""
        built = await scenario_app.build(
            ScenarioSettings(
                **{**LOCAL, "rest_port": 0, **settings},
                redis_url=self.redis_url,
                topology_address=self.addresses["topology"],
                network_address=self.addresses["network"],
                compute_address=self.addresses["compute"],
            )
        )
        await self._serve(built)
        self.addresses["rest"] = built.listeners["rest"]
        manager: ScenarioManager = built.root
        return manager

    async def everything(self, **scenario_settings: Any) -> None:
        """Topology, network, compute with a worker, scenario: the local stack in one process."""
        await self.topology()
        await self.network()
        await self.compute()
        await self.worker()
        await self.scenario(**scenario_settings)

    async def close(self) -> None:
        """Stop the workers and delete every topology left behind (the servers stop after)."""
        for worker, task in self._workers:
            worker.stop.set()
            with contextlib.suppress(Exception):
                await task
        for close in self._closers:
            await close()
        topology = self.built.get("topology")
        if topology is not None:
            manager: TopologyManager = topology.root
            for topology_id in await manager.store.ids():
                await manager.delete(topology_id)


@contextlib.asynccontextmanager
async def service_stack(
    serve_built: ServeBuilt, redis_url: str, temporal: Client | None = None
) -> AsyncIterator[ServiceStack]:
    """A `ServiceStack` with a short run directory (unix socket paths stay under 108 bytes)."""
    run_dir = Path(tempfile.mkdtemp(prefix="mk", dir="/tmp"))
    stack = ServiceStack(serve_built, redis_url, run_dir, temporal)
    try:
        yield stack
    finally:
        await stack.close()
        shutil.rmtree(run_dir, ignore_errors=True)
