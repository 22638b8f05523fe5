"""A small fake Kubernetes API server: the endpoints the kubernetes topology backend calls, over real HTTP.

The backend talks to it through the official client exactly as it talks to a cluster. It serves
namespaces (create, read, delete), pods (create, list with a label selector, read), meshnet
Topology resources (create, list) and nodes (list), with the API server's status codes and Status
bodies (404, 409, 403 into a terminating namespace, 422 for an invalid object). Every object it is
sent is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict) or meshnet's
CRD schema, as an API server would. Pods behave like a scheduler and a kubelet did their work
(`ready_after` seconds after creation they are Running and Ready on a node, with a pod IP), and a
deleted namespace disappears `terminate_after` seconds later with everything in it.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.32"
CRD_FILE = Path(__file__).resolve().parents[1] / "kubernetes" / "data" / "meshnet-topology-crd.yaml"
MESHNET_PREFIX = "/apis/networkop.co.uk/v1beta1"


def meshnet_schema() -> dict[str, Any]:
    """The openAPIV3Schema of meshnet's Topology CRD (the copy under tests/kubernetes/data)."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class FakeState:
    """What the fake cluster holds."""

    nodes: list[dict[str, Any]]
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    topologies: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    # Bookkeeping the API would not show.
    created_at: dict[tuple[str, str], float] = field(default_factory=dict)
    deleted_at: dict[str, float] = field(default_factory=dict)


class ApiError(Exception):
    """Answer with a Status object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


class FakeKubernetes:
    """The fake API server; `with FakeKubernetes() as api:` serves on 127.0.0.1 (api.url)."""

    def __init__(
        self,
        *,
        nodes: int = 3,
        ready_after: float = 0.05,
        terminate_after: float = 0.05,
        crd_installed: bool = True,
        validate: bool = True,
    ) -> None:
        self.ready_after = ready_after
        self.terminate_after = terminate_after
        self.crd_installed = crd_installed
        self.validate = validate
        # Knobs for failure tests: never-ready pods carry this waiting reason; terminating
        # namespaces that never go; (method, path regex) answered 403.
        self.never_ready_reason = ""
        self.stuck_terminating = False
        self.forbidden: list[tuple[str, str]] = []
        self.state = FakeState(nodes=[_node(f"worker-{i}", f"172.18.0.{i + 2}") for i in range(nodes)])
        self._lock = threading.Lock()
        self._next_ip = int(ipaddress.IPv4Address("10.244.0.10"))
        self._next_node = 0
        self._meshnet_schema = meshnet_schema()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the fake API server."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeKubernetes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self) -> str:
        """A kubeconfig document pointing at this server."""
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )

    def requests(self, method: str = "", path_part: str = "") -> list[Recorded]:
        """Recorded requests, filtered by method and a substring of the path."""
        with self._lock:
            return [
                r for r in self.state.requests if (not method or r.method == method) and path_part in r.path
            ]

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        """Copies of the pods of a namespace, as the API would list them now."""
        with self._lock:
            self._tick()
            return copy.deepcopy(list(self.state.pods.get(namespace, {}).values()))

    # --- request handling --------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                try:
                    status, reply = fake.handle(method, parts.path, parse_qs(parts.query), body)
                except ApiError as exc:
                    status, reply = exc.code, _status(exc.code, exc.reason, exc.message)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

        return Handler

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        """One API request: (HTTP status, JSON reply)."""
        with self._lock:
            self.state.requests.append(Recorded(method, path, query, body))
            for forbidden_method, pattern in self.forbidden:
                if method == forbidden_method and re.search(pattern, path):
                    raise ApiError(403, "Forbidden", f"{method} {path} is forbidden for this test user")
            self._tick()
            return self._route(method, path, query, body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        segments = [s for s in path.split("/") if s]
        if path == "/api/v1/nodes" and method == "GET":
            return 200, _list("NodeList", self.state.nodes)
        if path == "/api/v1/namespaces" and method == "POST":
            return self._create_namespace(body)
        if len(segments) == 4 and segments[:3] == ["api", "v1", "namespaces"]:
            name = segments[3]
            if method == "GET":
                return 200, self._namespace(name)
            if method == "DELETE":
                return self._delete_namespace(name)
        if len(segments) >= 5 and segments[:3] == ["api", "v1", "namespaces"] and segments[4] == "pods":
            namespace = segments[3]
            if len(segments) == 5 and method == "POST":
                return self._create(namespace, "pods", "Pod", body)
            if len(segments) == 5 and method == "GET":
                selector = (query.get("labelSelector") or [""])[0]
                items = [p for p in self.state.pods.get(namespace, {}).values() if _matches(p, selector)]
                return 200, _list("PodList", items)
            if len(segments) == 6 and method == "GET":
                pod = self.state.pods.get(namespace, {}).get(segments[5])
                if pod is None:
                    raise ApiError(404, "NotFound", f'pods "{segments[5]}" not found')
                return 200, pod
        if path.startswith(MESHNET_PREFIX + "/namespaces/") and path.endswith("/topologies"):
            if not self.crd_installed:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            namespace = segments[4]
            if method == "POST":
                return self._create(namespace, "topologies", "Topology", body)
            if method == "GET":
                return 200, _list("TopologyList", list(self.state.topologies.get(namespace, {}).values()))
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _namespace(self, name: str) -> dict[str, Any]:
        namespace = self.state.namespaces.get(name)
        if namespace is None:
            raise ApiError(404, "NotFound", f'namespaces "{name}" not found')
        return namespace

    def _create_namespace(self, body: dict[str, Any]) -> tuple[int, Any]:
        self._check("Namespace", body)
        name = body["metadata"]["name"]
        if name in self.state.namespaces:
            raise ApiError(409, "AlreadyExists", f'namespaces "{name}" already exists')
        namespace = copy.deepcopy(body)
        namespace["metadata"].update(uid=str(uuid.uuid4()), creationTimestamp=_now())
        namespace["status"] = {"phase": "Active"}
        self.state.namespaces[name] = namespace
        return 201, namespace

    def _delete_namespace(self, name: str) -> tuple[int, Any]:
        namespace = self._namespace(name)
        namespace["status"]["phase"] = "Terminating"
        namespace["metadata"].setdefault("deletionTimestamp", _now())
        self.state.deleted_at.setdefault(name, time.monotonic())
        return 200, namespace

    def _create(self, namespace: str, resource: str, kind: str, body: dict[str, Any]) -> tuple[int, Any]:
        current = self._namespace(namespace)
        if current["status"]["phase"] == "Terminating":
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )
        self._check(kind, body)
        name = body["metadata"]["name"]
        if body["metadata"].get("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
        store = self.state.pods if resource == "pods" else self.state.topologies
        objects = store.setdefault(namespace, {})
        if name in objects:
            raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists')
        created = copy.deepcopy(body)
        created["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now())
        if resource == "pods":
            self.state.created_at[(namespace, name)] = time.monotonic()
            created["spec"]["nodeName"] = self.state.nodes[self._next_node % len(self.state.nodes)][
                "metadata"
            ]["name"]
            self._next_node += 1
            created["status"] = _pending(created, "ContainerCreating")
        objects[name] = created
        return 201, created

    def _check(self, kind: str, body: Any) -> None:
        if not self.validate:
            return
        if not isinstance(body, dict) or body.get("kind") != kind:
            raise ApiError(400, "BadRequest", f"expected a {kind} object")
        try:
            if kind == "Topology":
                jsonschema.validate(body, self._meshnet_schema)
            else:
                kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.absolute_path)
            raise ApiError(422, "Invalid", f"{kind} is invalid: {where}: {exc.message}") from None

    def _tick(self) -> None:
        """Let time pass: pods become ready, terminating namespaces go."""
        now = time.monotonic()
        for namespace, pods in self.state.pods.items():
            for name, pod in pods.items():
                if pod["status"].get("podIP"):
                    continue
                if self.never_ready_reason:
                    pod["status"] = _pending(pod, self.never_ready_reason)
                elif now - self.state.created_at[(namespace, name)] >= self.ready_after:
                    pod["status"] = self._running(pod)
        if self.stuck_terminating:
            return
        for name, deleted in list(self.state.deleted_at.items()):
            if now - deleted >= self.terminate_after:
                del self.state.deleted_at[name]
                self.state.namespaces.pop(name, None)
                self.state.pods.pop(name, None)
                self.state.topologies.pop(name, None)

    def _running(self, pod: dict[str, Any]) -> dict[str, Any]:
        ip = str(ipaddress.IPv4Address(self._next_ip))
        self._next_ip += 1
        containers = pod["spec"]["containers"]
        return {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": _node_ip(self.state.nodes, pod["spec"]["nodeName"]),
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "ContainersReady", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "ready": True,
                    "image": c["image"],
                    "state": {"running": {"startedAt": _now()}},
                }
                for c in containers
            ],
        }


def _pending(pod: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
        ],
        "containerStatuses": [
            {"name": c["name"], "ready": False, "image": c["image"], "state": {"waiting": {"reason": reason}}}
            for c in pod["spec"]["containers"]
        ],
    }


def _node(name: str, ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def _node_ip(nodes: list[dict[str, Any]], name: str) -> str:
    for node in nodes:
        if node["metadata"]["name"] == name:
            return str(node["status"]["addresses"][0]["address"])
    return ""


def _matches(obj: dict[str, Any], selector: str) -> bool:
    """Equality-based label selectors (k=v,k2=v2), the only kind the backend sends."""
    labels = obj["metadata"].get("labels") or {}
    for term in _terms(selector):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _terms(selector: str) -> Iterator[str]:
    for term in selector.split(","):
        if term.strip():
            yield term.strip()


def _list(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items}


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
