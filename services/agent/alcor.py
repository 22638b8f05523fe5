"""Alcor's port manager, as Merak's agent called it (PRECREATE → POST, CREATE → PUT, DELETE)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import httpx

from merak import netns
from merak.errors import FailedPrecondition, InvalidArgument, Unavailable

# Merak: the tap name is "tap" + the first 11 characters of Alcor's port id (ACA derives the same).
TAP_ID_CHARS = 11
MAX_URL = 512


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
    ):
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        self._pool = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix="alcor",
            initializer=None if netns_fd is None else partial(netns.enter_fd_for_good, netns_fd),
        )

    async def close(self) -> None:
        """Close the HTTP connections and the threads."""
        self._pool.shutdown(wait=True)
        self.client.close()

    async def _send(self, method: str, path: str, expect: int, body: object | None = None) -> httpx.Response:
        call = partial(self.client.request, method, path, json=body)
        try:
            response = await asyncio.get_running_loop().run_in_executor(self._pool, call)
        except httpx.HTTPError as exc:
            raise Unavailable(f"alcor port manager at {self.client.base_url} unreachable: {exc}") from exc
        if response.status_code != expect:
            detail = response.text[:300]
            error = Unavailable if response.status_code >= 500 else FailedPrecondition
            raise error(f"alcor {method} {path} answered {response.status_code}, expected {expect}: {detail}")
        return response

    async def create_minimal(
        self,
        *,
        project_id: str,
        tenant_id: str,
        vpc_id: str,
        subnet_id: str,
        security_group: str,
        device_id: str,
    ) -> AlcorPort:
        """PRECREATE: a port with only its network and subnet; Alcor picks IP and MAC (201)."""
        body = {
            "port": {
                "admin_state_up": True,
                "device_id": device_id,
                "network_id": vpc_id,
                "security_groups": [security_group] if security_group else [],
                "fixed_ips": [{"subnet_id": subnet_id}],
                "tenant_id": tenant_id,
            }
        }
        response = await self._send("POST", f"/project/{project_id}/ports", 201, body)
        try:
            port = response.json()["port"]
            return AlcorPort(
                port_id=port["id"], ip=port["fixed_ips"][0]["ip_address"], mac=port["mac_address"]
            )
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise Unavailable(f"alcor port reply lacks id/ip/mac: {response.text[:300]}") from exc

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
        await self._send("PUT", f"/project/{project_id}/ports/{port_id}", 200, body)

    async def delete(self, *, project_id: str, port_id: str) -> None:
        """DELETE: release the port (200)."""
        await self._send("DELETE", f"/project/{project_id}/ports/{port_id}", 200)
