"""The kubernetes backend: the TopologyBackend that deploys a topology's objects and watches its pods.

The official `kubernetes` client is synchronous; its calls run in a bounded thread pool, so that
creating thousands of pods proceeds a few dozen at a time without blocking the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from kubernetes.client import Configuration

from merak.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, Unavailable
from merak.logs import get_logger
from merak.v1 import common_pb2, topology_pb2
from services.topology.backends import (
    DestroyReport,
    HostRuntime,
    ReadyCallback,
    TopologyBackend,
    VhostRuntime,
)
from services.topology.backends.kubernetes.api import KubernetesApi, KubernetesApiError, load_configuration
from services.topology.backends.kubernetes.objects import (
    AGENT_PORT,
    ANNOTATION_TOPOLOGY_ID,
    LABEL_ROLE,
    LABEL_TOPOLOGY,
    ROLE_VHOST,
    Images,
    KubernetesOptions,
    build_objects,
    namespace_name,
    node_host,
    pod_state,
    resolve_images,
)
from services.topology.models import Topology, TopologySpec

log = get_logger(__name__)

T = TypeVar("T")

# A DNS-1123 label: what pod and namespace names must be.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_DNS_LABEL = 63

# The images of a topology config, looked up by topology id (the topology service's store).
ImageLookup = Callable[[str], Awaitable[Sequence[topology_pb2.InternalTopologyImage]]]


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
        self._hosts = [node_host(node) for node in nodes]

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
