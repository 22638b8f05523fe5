"""Alcor's port manager, as Merak's agent called it (PRECREATE → POST, CREATE → PUT, DELETE)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import httpx

from merak import netns
from merak.errors import FailedPrecondition, InvalidArgument, MerakError, Unavailable
from merak.logs import get_logger
from merak.metrics import ControlPlaneMetrics

log = get_logger(__name__)

# The Alcor calls of the request being served, (operation, code, seconds): the agent returns them,
# so the compute service can keep the control plane's results per scenario.
recorded_calls: ContextVar[list[tuple[str, str, float]] | None] = ContextVar("recorded_calls", default=None)

# Merak: the tap name is "tap" + the first 11 characters of Alcor's port id (ACA derives the same).
TAP_ID_CHARS = 11
MAX_URL = 512


def port_id_for(topology_id: str, vhost: str, vm: str) -> str:
    """The Alcor port id of a VM: stable, so a retried create finds the port it already made."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"merak:{topology_id}/{vhost}/{vm}"))


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


class AlcorPorts:
    """A client of Alcor's port manager (`<base_url>/project/<p>/ports`).

    Its connections leave from the management namespace (`netns_fd`: the namespace the agent started
    in, the machine's), not from the vhost's, which has only the emulated data plane: a compute node
    reaches its control plane over a management network. Calls run on threads that live there.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 20.0,
        netns_fd: int | None = None,
        workers: int = 16,
        attempts: int = 4,
        backoff: float = 0.2,
        metrics: ControlPlaneMetrics | None = None,
    ):
        # 4 attempts 0.2 s, 0.4 s, 0.8 s apart: a restarting Alcor pod, not an outage.
        self.attempts = attempts
        self.backoff = backoff
        self.metrics = metrics
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self._pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="alcor",
            initializer=None if netns_fd is None else partial(netns.enter_fd_for_good, netns_fd),
        )

    def _timed_request(
        self, method: str, path: str, body: object | None
    ) -> tuple[httpx.Response | httpx.HTTPError, float]:
        """One HTTP request on a worker thread, timed there: the wait for a free thread is not Alcor's."""
        started = time.perf_counter()
        try:
            response: httpx.Response | httpx.HTTPError = self.client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            response = exc
        return response, time.perf_counter() - started

    def _observe(self, operation: str, code: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.observe("alcor", operation, code, seconds, service="port")
        calls = recorded_calls.get()
        if calls is not None:
            calls.append((operation, code, seconds))

    async def close(self) -> None:
        """Close the HTTP connections and the threads."""
        self._pool.shutdown(wait=True)
        self.client.close()

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        expect: int,
        body: object | None = None,
        *,
        before_retry: Callable[[], Awaitable[httpx.Response | None]] | None = None,
    ) -> httpx.Response:
        """One call, retried with backoff (bounded) while Alcor is unreachable, times out or answers
        5xx; any other unexpected status fails at once. Errors name the call and Alcor's status."""
        call = partial(self._timed_request, method, path, body)
        loop = asyncio.get_running_loop()
        for attempt in range(1, self.attempts + 1):
            response, seconds = await loop.run_in_executor(self._pool, call)
            if isinstance(response, httpx.HTTPError):
                self._observe(operation, "error", seconds)
                problem: MerakError = Unavailable(
                    f"alcor {operation} ({method} {self.client.base_url}{path}) failed: "
                    f"{type(response).__name__}: {response}"
                )
            else:
                self._observe(operation, str(response.status_code), seconds)
                if response.status_code == expect:
                    return response
                detail = response.text[:300]
                message = f"alcor {operation} ({method} {path}) answered {response.status_code}: {detail}"
                if response.status_code < 500:
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
        lookup = f"/project/{project_id}/ports/{port_id}"

        async def made_already() -> httpx.Response | None:
            # The failed attempt may have made the port (a lost reply): find it before posting again.
            try:
                return await self._send("get_port", "GET", lookup, 200)
            except FailedPrecondition:
                return None

        try:
            response = await self._send(
                "create_port", "POST", f"/project/{project_id}/ports", 201, body, before_retry=made_already
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
            raise Unavailable(f"alcor create_port reply lacks id/ip/mac: {str(port)[:300]}") from exc

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
        await self._send("bind_port", "PUT", f"/project/{project_id}/ports/{port_id}", 200, body)

    async def delete(self, *, project_id: str, port_id: str) -> None:
        """DELETE: release the port (200)."""
        try:
            await self._send("delete_port", "DELETE", f"/project/{project_id}/ports/{port_id}", 200)
        except FailedPrecondition as exc:
            if " answered 404" not in exc.message:
                raise  # a 404 is a port already gone (a retried delete)
