"""A listener on a loopback port that is not a control plane: it answers every request with an error
that carries a secret (in its status line and its JSON body), and counts what reaches it. The probe
of issue #28: a request naming it must be refused before any of it arrives, and its words must never
come back to a caller."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

SECRET = "db_password=secret"
LEAK = f"INTERNAL-ONLY-DATA: {SECRET}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with self.server.lock:
            self.server.requests.append((self.command, self.path))
        body = json.dumps({"status": 400, "error": "Bad Request", "message": LEAK}).encode()
        self.send_response(400, f"Bad Request: {LEAK}")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer  # noqa: N815 - the stdlib's handler names

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `requests` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.connections = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.lock:
            self.connections += 1
        return True


class LeakyListener:
    """The listener, served from a thread while the `with` block runs."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, name="leaky", daemon=True)

    @property
    def port(self) -> int:
        """Its port on 127.0.0.1."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """A base URL of it, as a request would name an Alcor."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def reached(self) -> int:
        """Connections accepted so far (a refused request opens none)."""
        with self._server.lock:
            return self._server.connections

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request it answered."""
        with self._server.lock:
            return list(self._server.requests)

    def __enter__(self) -> LeakyListener:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
