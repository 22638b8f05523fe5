"""Merak's REST client for Alcor: where each Alcor service listens, and one call timed, checked, mapped."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from merak import callstats
from merak.errors import FailedPrecondition, Unavailable, logged_body, remote_error_code
from merak.logs import get_logger
from services.network.metrics import NetworkMetrics
from services.network.models import AlcorEndpoints
from services.network.spec import parse_alcor_url

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AlcorPorts:
    """The ports of Alcor's services on its host (Kubernetes NodePorts by default)."""

    vpc: int = 30001
    subnet: int = 30002
    router: int = 30003
    node: int = 30007
    sg: int = 30008


def alcor_endpoints(url: str, ports: AlcorPorts) -> AlcorEndpoints:
    """The base URL of each Alcor service: the host's service ports, or one port when the URL has one."""
    parsed = parse_alcor_url(url)
    return AlcorEndpoints(
        vpc=parsed.base(ports.vpc),
        subnet=parsed.base(ports.subnet),
        router=parsed.base(ports.router),
        node=parsed.base(ports.node),
        sg=parsed.base(ports.sg),
    )


def path(*segments: str) -> str:
    """A URL path of `segments`, each quoted whole (ids and project ids come from the request)."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


def _answered(response: httpx.Response) -> str:
    """An error reply in our words: its status and Alcor's error code when it gives one, never its body
    or reason phrase (a listener at a wrong URL may answer with anything, secrets too)."""
    code = remote_error_code(response.content)
    return f"{response.status_code} ({code})" if code else str(response.status_code)


def _failed(exc: httpx.HTTPError) -> str:
    """A failed call in our words: a connection refused or a timeout as httpx says it; any other failure
    (a reply that is not HTTP) by its kind only, since its text may quote what came back."""
    if isinstance(exc, (httpx.ConnectError, httpx.TimeoutException)):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    log.warning("alcor_transport_error", error=f"{type(exc).__name__}: {str(exc)[:200]}")
    return type(exc).__name__


class AlcorClient:
    """Calls into Alcor over one HTTP client: each timed as a plugin call, any non-2xx raised as our error."""

    def __init__(self, http: httpx.AsyncClient, metrics: NetworkMetrics, plugin: str) -> None:
        self.http = http
        self.metrics = metrics
        self.plugin = plugin

    async def call(
        self, operation: str, method: str, url: str, body: Any = None, *, gone: tuple[int, ...] = ()
    ) -> Any:
        """One Alcor call; any 2xx is success (as Merak), `gone` codes mean "already removed"."""
        started = time.perf_counter()
        with self.metrics.timed(self.plugin, operation):
            try:
                response = await self.http.request(method, url, json=body)
            except httpx.HTTPError as exc:
                elapsed = time.perf_counter() - started
                self.metrics.control_plane.observe(self.plugin, operation, "error", elapsed)
                callstats.note(operation, "error", elapsed)
                raise Unavailable(f"alcor {method} {url} failed: {_failed(exc)}") from exc
        code = str(response.status_code)
        elapsed = time.perf_counter() - started
        self.metrics.control_plane.observe(self.plugin, operation, code, elapsed)
        callstats.note(operation, code, elapsed)
        if response.status_code in gone:
            log.info("alcor_already_gone", method=method, url=url, status=response.status_code)
            return None
        if not response.is_success:
            log.warning(
                "alcor_error_reply",
                operation=operation,
                status=response.status_code,
                body=logged_body(response.content),
            )
            error = Unavailable if response.status_code >= 500 else FailedPrecondition
            raise error(f"alcor {method} {url} answered {_answered(response)}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text  # DELETE /nodes answers a plain string
