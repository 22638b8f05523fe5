"""teste2e over Merak's REST API, as Merak's own teste2e drove it."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import json_format

from merak.tls import TlsFiles
from merak_tools.teste2e.flow import Runner
from merak_tools.teste2e.options import Options
from merak_tools.teste2e.report import E2EError, Report, console

REST_PATHS = {
    "topology": "/api/topologies",
    "network": "/api/network-config",
    "service": "/api/service-config",
    "compute": "/api/compute-config",
    "test": "/api/test-config",
}


# The REST API's bearer token, as the scenario service is given it: the token, or a file holding it.
ENV_TOKEN, ENV_TOKEN_FILE = "MERAK_REST_TOKEN", "MERAK_REST_TOKEN_FILE"


def rest_token(environ: dict[str, str] | None = None) -> str:
    """The token to present ("" when neither variable is set)."""
    env = os.environ if environ is None else environ
    if env.get(ENV_TOKEN_FILE):
        lines = Path(env[ENV_TOKEN_FILE]).read_text().splitlines()
        return lines[0].strip() if lines else ""
    return env.get(ENV_TOKEN, "")


def rest_client(base_url: str, timeout: float) -> httpx.AsyncClient:
    """An HTTP client of the REST API: with the token when one is set, and over HTTPS verifying the
    server with the process's TLS files (MERAK_TLS_CA, and its certificate under mTLS)."""
    token = rest_token()
    tls = TlsFiles.current()
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        timeout=timeout,
        headers={"Authorization": f"Bearer {token}"} if token else None,
        verify=tls.client_ssl_context() if tls is not None else True,
    )


class RestRunner(Runner):
    """The same run over Merak's REST API, polled as Merak's teste2e polled it; the ping test and the
    teardown check still use the gRPC API (the same store answers both)."""

    def __init__(self, opts: Options, channel: grpc.aio.Channel) -> None:
        super().__init__(opts, channel)
        self.http = rest_client(opts.rest, opts.timeout)

    async def run(self) -> Report:
        """Create, deploy, test, tear down; then close the HTTP client."""
        try:
            return await super().run()
        finally:
            await self.http.aclose()

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One REST call; a FAILED envelope is an error that carries Merak's message."""
        try:
            response = await self.http.request(method, path, json=body)
            reply: dict[str, Any] = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise E2EError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if reply.get("status") != "OK":
            raise E2EError(f"{method} {path}: HTTP {response.status_code}: {reply.get('message')}")
        return reply

    async def _create(self) -> None:
        started = time.perf_counter()
        ids = self.report.ids
        for kind, path in REST_PATHS.items():
            body = json_format.MessageToDict(self.configs[kind], preserving_proto_field_name=True)
            ids[kind] = (await self._call("POST", path, body))["data"]["id"]
        scenario = {
            "name": "scenario-test-1", "project_id": "123456789", "topology_id": ids["topology"],
            "service_config_id": ids["service"], "network_config_id": ids["network"],
            "compute_config_id": ids["compute"], "test_config_id": ids["test"],
        }  # fmt: skip
        created = await self._call("POST", "/api/scenarios", scenario)
        self.scenario_id = ids["scenario"] = created["data"]["id"]
        self.report.phases["create configs"] = time.perf_counter() - started
        console.print(f"scenario [bold]{self.scenario_id}[/bold] created over REST at {self.opts.rest}")

    async def _status(self, name: str) -> str:
        """The scenario's status of one service (NONE, DEPLOYING, READY, …)."""
        scenario = (await self._call("GET", f"/api/scenarios/{self.scenario_id}"))["data"]
        return str(scenario.get(f"{name}_status", ""))

    async def _rest_action(self, service: str, action: str) -> dict[str, Any]:
        body = {"scenario_id": self.scenario_id, "service": {"service_name": service, "action": action}}
        return await self._call("POST", "/api/scenarios/actions", body)

    async def _deploy(self, service: int, name: str) -> None:
        started = time.perf_counter()
        reply = await self._rest_action(name, "DEPLOY")
        console.print(f"DEPLOY {name}: {reply['message']}")
        deadline = time.monotonic() + self.opts.timeout
        while not await self._deployed(name):
            if time.monotonic() > deadline:
                raise E2EError(f"{name} not ready after {self.opts.timeout:.0f}s")
            await asyncio.sleep(1.0)
        self.report.phases[f"deploy {name}"] = time.perf_counter() - started

    async def _deployed(self, name: str) -> bool:
        """Merak's teste2e tests: the READY field of the topology CHECK (2nd comma field) equals the
        vhosts; the compute CHECK's `data.vms[0].id` reads "<done> out of <total> done!" with done = total."""
        if name == "network":
            return True
        reply = await self._rest_action(name, "CHECK")
        if await self._status(name) == "FAILED":
            raise E2EError(f"{name} FAILED: {reply['message']}")
        if name == "topology":
            ready = reply["message"].split(",")[1].split(":")[1].strip()
            return int(ready) == self.opts.hosts
        words = str((reply.get("data") or {}).get("vms", [{}])[0].get("id", "")).split(" ")
        self.report.vms = int(words[3]) if len(words) > 3 else 0
        self.report.vms_done = int(words[0]) if words[0].isdigit() else 0
        return len(words) > 3 and words[0] == words[3]

    async def _delete(self) -> None:
        """The scenario's services (Merak's order), the scenario, then its configs."""
        await self._delete_services()
        await self._call("DELETE", f"/api/scenarios/{self.scenario_id}")
        for kind, path in REST_PATHS.items():
            await self._call("DELETE", f"{path}/{self.report.ids[kind]}")

    async def _delete_services(self) -> None:
        """DELETE compute (and wait until its VMs are gone), network, topology: Merak's order."""
        for name in ("compute", "network", "topology"):
            if await self._status(name) == "NONE":
                continue
            await self._rest_action(name, "DELETE")
            deadline = time.monotonic() + self.opts.timeout
            while (status := await self._status(name)) != "NONE":
                if time.monotonic() > deadline:
                    raise E2EError(f"{name} still {status} after {self.opts.timeout:.0f}s")
                await asyncio.sleep(0.5)
                await self._rest_action(name, "CHECK")
