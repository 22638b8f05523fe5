"""The Kubernetes API calls of the backend: a thin blocking layer over the official client.

Every failure comes out as a `MerakError`: `KubernetesApiError` with the HTTP status when the API
server answered, `Unavailable` when it could not be reached, `FailedPrecondition` when there is no
cluster configuration or no meshnet. The fake API server of the tests serves the same HTTP
endpoints, so this layer talks to it exactly as it talks to a cluster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import urllib3
from kubernetes.client import ApiClient, Configuration, CoreV1Api, CustomObjectsApi
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException, incluster_config, kube_config

from merak.errors import FailedPrecondition, MerakError, Unavailable
from services.topology.backends.kubernetes.objects import MESHNET_GROUP, MESHNET_PLURAL, MESHNET_VERSION


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
