"""A small fake of Alcor's REST API (port manager for now), answering as alcor-reference.md says.

It records every request (method, path, JSON body) so tests can assert exactly what was sent.
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    body: Any


@dataclass
class AlcorState:
    """What the fake Alcor holds, and the requests it saw."""

    requests: list[Recorded] = field(default_factory=list)
    ports: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_host: int = 2  # the gateway takes .1 at subnet creation, so ports start at .2
    fail_next: list[int] = field(default_factory=list)  # status codes to answer, one per request
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    state: AlcorState

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _answer(self, status: int, body: Any = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _handle(self, method: str) -> None:
        body = self._body() if method in ("POST", "PUT") else None
        state = self.state
        with state.lock:
            state.requests.append(Recorded(method, self.path, copy.deepcopy(body)))
            if state.fail_next:
                self._answer(
                    state.fail_next.pop(0), {"status": 500, "error": "forced", "message": "forced by test"}
                )
                return
            parts = self.path.strip("/").split("/")
            if len(parts) >= 3 and parts[0] == "project" and parts[2] == "ports":
                self._ports(method, parts[1], parts[3] if len(parts) > 3 else "", body)
                return
            self._answer(404, {"status": 404, "error": "Not Found", "path": self.path})

    def _ports(self, method: str, project: str, port_id: str, body: Any) -> None:
        state = self.state
        if method == "POST" and not port_id:
            port = dict((body or {}).get("port") or {})
            if not port.get("network_id"):
                self._answer(
                    412, {"status": 412, "error": "Precondition Failed", "message": "NetworkIdRequired"}
                )
                return
            port["id"] = port.get("id") or str(uuid.uuid4())
            port["project_id"] = project
            port.setdefault("tenant_id", project)
            host = state.next_host.to_bytes(3, "big")
            port.setdefault("mac_address", "aa:bb:cc:" + ":".join(f"{b:02x}" for b in host))
            fixed = port.get("fixed_ips") or [{}]
            fixed[0] = {**fixed[0], "ip_address": fixed[0].get("ip_address") or f"10.0.0.{state.next_host}"}
            port["fixed_ips"] = fixed
            state.next_host += 1
            state.ports[port["id"]] = port
            self._answer(201, {"port": port})
        elif method == "PUT" and port_id:
            if port_id not in state.ports:
                self._answer(404, {"status": 404, "error": "Not Found", "message": "PortEntityNotFound"})
                return
            merged = {
                **state.ports[port_id],
                **{k: v for k, v in ((body or {}).get("port") or {}).items() if v is not None},
            }
            state.ports[port_id] = merged
            self._answer(200, {"port": merged})
        elif method == "DELETE" and port_id:
            if state.ports.pop(port_id, None) is None:
                self._answer(404, {"status": 404, "error": "Not Found", "message": "PortEntityNotFound"})
                return
            self._answer(200)
        else:
            self._answer(405, {"status": 405, "error": "Method Not Allowed"})

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_GET(self) -> None:
        self._handle("GET")


class FakeAlcor:
    """A fake Alcor on 127.0.0.1 (a free port), served by a thread until `stop`."""

    def __init__(self) -> None:
        self.state = AlcorState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:43123."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
