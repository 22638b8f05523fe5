"""Alcor's port manager, as Merak's agent called it (PRECREATE → POST, CREATE → PUT, DELETE)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from merak import callstats, netns
from merak.errors import (
    FailedPrecondition,
    InvalidArgument,
    MerakError,
    Unavailable,
    logged_body,
    remote_error_code,
)
from merak.logs import get_logger
from merak.metrics import ControlPlaneMetrics
from services.agent.http1 import BadResponse, Http1Pool

log = get_logger(__name__)

# Merak: the tap name is "tap" + the first 11 characters of Alcor's port id (ACA derives the same).
TAP_ID_CHARS = 11
MAX_URL = 512


def port_id_for(topology_id: str, vhost: str, vm: str) -> str:
    """The Alcor port id of a VM: stable, so a retried create finds the port it already made."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"merak:{topology_id}/{vhost}/{vm}"))


def ports_path(project_id: str, port_id: str = "") -> str:
    """The port manager's path of a project's ports (or of one port), ids quoted."""
    path = f"/project/{quote(project_id, safe='')}/ports"
    return f"{path}/{quote(port_id, safe='')}" if port_id else path


def check_alcor_url(field: str, url: str) -> str:
    """An http(s) base URL with a host and nothing else odd (no credentials, query or fragment)."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise InvalidArgument(field, f"{url[:100]!r} has a bad port") from None
    if (
        len(text) > MAX_URL
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.query
        or parts.fragment
    ):
        raise InvalidArgument(field, f"{url[:100]!r} is not an Alcor base URL (e.g. http://10.0.0.5:30006)")
    return text


def transport_error(exc: Exception) -> str:
    """A failed call in our words: a connection refused, reset or closed, or a timeout, as the OS (or
    http1) says it; an answer that is not HTTP by its kind only, since its text may quote what came back."""
    if isinstance(exc, (OSError, TimeoutError)):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    log.warning("alcor_transport_error", error=f"{type(exc).__name__}: {str(exc)[:200]}")
    return type(exc).__name__


@dataclass(frozen=True, slots=True)
class AlcorPort:
    """What Alcor allocated for a port."""

    port_id: str
    ip: str
    mac: str

    @property
    def tap_name(self) -> str:
        """The device name ACA programs for this port."""
        return "tap" + self.port_id[:TAP_ID_CHARS]


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer of Alcor's: its status and body."""

    status: int
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None when it is not JSON)."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class AlcorPorts:
    """A client of Alcor's port manager (`<base_url>/project/<p>/ports`).

    Its connections leave from the management namespace (`netns_fd`: the namespace the agent started
    in, the machine's), not from the vhost's, which has only the emulated data plane: a compute node
    reaches its control plane over a management network. The sockets are opened there; the requests
    run on the agent's event loop over at most `connections` kept-alive connections to one Alcor (a
    request beyond waits for one). Each call is timed at the socket (http1): from its request handed to
    the socket to its answer's last byte read, without the wait for a connection.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 20.0,
        netns_fd: int | None = None,
        connections: int = 64,
        attempts: int = 4,
        backoff: float = 0.2,
        metrics: ControlPlaneMetrics | None = None,
    ):
        # 4 attempts 0.2 s, 0.4 s, 0.8 s apart: a restarting Alcor pod, not an outage.
        self.attempts = attempts
        self.backoff = backoff
        self.metrics = metrics
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.netns_fd = netns_fd
        self.connections = connections
        self._pool = Http1Pool(
            self.base_url, connections=connections, timeout=timeout, open_socket=self._open_socket
        )

    def _open_socket(self, family: int, kind: int, proto: int) -> socket.socket:
        """A socket for a connection to Alcor, made in the management namespace."""
        if self.netns_fd is None:
            return socket.socket(family, kind, proto)
        with netns.entered_fd(self.netns_fd):
            return socket.socket(family, kind, proto)

    async def _timed_request(
        self, method: str, path: str, body: object | None
    ) -> tuple[Reply | Exception, float]:
        """One HTTP request and its time at the socket (what no answer came after: its time until then)."""
        payload = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        started = time.perf_counter()
        try:
            answer = await self._pool.request(method, path, payload)
        except (OSError, TimeoutError, BadResponse) as exc:
            return exc, time.perf_counter() - started
        return Reply(answer.status, answer.body), answer.seconds

    def _observe(self, operation: str, code: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe("alcor", operation, code, seconds, service="port")
        # The agent returns the calls of the request being served (ports._recorded): the compute service
        # keeps the control plane's results per scenario.
        callstats.note(operation, code, seconds)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._pool.close()

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        expect: int,
        body: object | None = None,
        *,
        before_retry: Callable[[], Awaitable[Reply | None]] | None = None,
    ) -> Reply:
        """One call, retried with backoff (bounded) while Alcor is unreachable, times out or answers
        5xx; any other unexpected status fails at once. Errors name the call and Alcor's status."""
        for attempt in range(1, self.attempts + 1):
            reply, seconds = await self._timed_request(method, path, body)
            if isinstance(reply, Exception):
                self._observe(operation, "error", seconds)
                problem: MerakError = Unavailable(
                    f"alcor {operation} ({method} {self.base_url}{path}) failed: {transport_error(reply)}"
                )
            else:
                self._observe(operation, str(reply.status), seconds)
                if reply.status == expect:
                    return reply
                message = f"alcor {operation} ({method} {path}) answered {reply.status}"
                code = remote_error_code(reply.body)
                if code:
                    message += f" ({code})"
                log.warning(
                    "alcor_error_reply",
                    operation=operation,
                    status=reply.status,
                    body=logged_body(reply.body),
                )
                if reply.status < 500:
                    raise FailedPrecondition(message)
                problem = Unavailable(message)
            if attempt == self.attempts:
                raise problem
            log.info("alcor_retry", operation=operation, attempt=attempt, error=problem.message)
            await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            if before_retry is not None:
                done = await before_retry()
                if done is not None:
                    return done
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def create_minimal(
        self,
        *,
        project_id: str,
        tenant_id: str,
        vpc_id: str,
        subnet_id: str,
        security_group: str,
        device_id: str,
        port_id: str,
    ) -> AlcorPort:
        """PRECREATE: a port with only its network and subnet; Alcor picks IP and MAC (201).

        `port_id` is chosen by the caller (stable per VM), so a create that is retried, by this client
        or by a retried activity, finds the port it made instead of making a second one; the happy
        path is one call.
        """
        body = {
            "port": {
                "id": port_id,
                "admin_state_up": True,
                "device_id": device_id,
                "network_id": vpc_id,
                "security_groups": [security_group] if security_group else [],
                "fixed_ips": [{"subnet_id": subnet_id}],
                "tenant_id": tenant_id,
            }
        }
        lookup = ports_path(project_id, port_id)

        async def made_already() -> Reply | None:
            # The failed attempt may have made the port (a lost reply): find it before posting again.
            try:
                return await self._send("get_port", "GET", lookup, 200)
            except FailedPrecondition:
                return None

        try:
            response = await self._send(
                "create_port", "POST", ports_path(project_id), 201, body, before_retry=made_already
            )
        except FailedPrecondition:
            # A retried activity posts a port that exists (Alcor refuses the duplicate id): it is ours.
            found = await made_already()
            if found is None:
                raise
            response = found
        reply = response.json()
        port = reply.get("port") if isinstance(reply, dict) else None
        try:
            return AlcorPort(
                port_id=port["id"],  # type: ignore[index]  # None is caught below
                ip=port["fixed_ips"][0]["ip_address"],  # type: ignore[index]
                mac=port["mac_address"],  # type: ignore[index]
            )
        except (KeyError, IndexError, TypeError) as exc:
            log.warning("alcor_reply_unreadable", operation="create_port", body=logged_body(response.body))
            raise Unavailable("alcor create_port answered 201 without a port id, IP and MAC") from exc

    async def bind(
        self, *, project_id: str, tenant_id: str, port_id: str, vpc_id: str, vm_name: str, host: str
    ) -> None:
        """CREATE: bind the port to its host so Alcor programs it there (200)."""
        body = {
            "port": {
                "project_id": project_id,
                "id": port_id,
                "name": vm_name,
                "description": "",
                "network_id": vpc_id,
                "tenant_id": tenant_id,
                "admin_state_up": True,
                "veth_name": f"in{vm_name}",
                "device_id": vm_name,
                "device_owner": "compute:nova",
                "fast_path": True,
                "binding:host_id": host,
            }
        }
        await self._send("bind_port", "PUT", ports_path(project_id, port_id), 200, body)

    async def delete(self, *, project_id: str, port_id: str) -> None:
        """DELETE: release the port (200)."""
        try:
            await self._send("delete_port", "DELETE", ports_path(project_id, port_id), 200)
        except FailedPrecondition as exc:
            if " answered 404" not in exc.message:
                raise  # a 404 is a port already gone (a retried delete)
