"""The Alcor stand-in served: aiohttp on an event loop of its own thread, one listener per Alcor
service or one for all, over one shared state."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from merak_tools.alcor_standin.api import AlcorApi, spring_error
from merak_tools.alcor_standin.southbound import PUSH_TIMEOUT, Southbound
from merak_tools.alcor_standin.state import AlcorState

ALCOR_SERVICES = ("vpc", "subnet", "router", "node", "sg", "port")
# Where Alcor's services answer on a Kubernetes node (its NodePorts), as Merak reaches them.
ALCOR_NODEPORTS = {"vpc": 30001, "subnet": 30002, "router": 30003, "port": 30006, "node": 30007, "sg": 30008}


class FakeAlcor:
    """An Alcor on `host` (free ports unless `ports` names them), served until `stop`.

    `latency` (seconds) is added before every answer, without holding anything up meanwhile.
    `southbound`: push goal states to the registered hosts' agents as DPM/NCM do (southbound.py); its
    knobs (`pushing`, `push_delay`, `push_drop`, `push_error`, `push_timeout`) may be changed any time.
    """

    def __init__(
        self,
        services: Sequence[str] = (),
        *,
        host: str = "127.0.0.1",
        ports: Mapping[str, int] | None = None,
        latency: float = 0.0,
        record: bool = True,
        southbound: bool = True,
        push_delay: float = 0.0,
        push_drop: float = 0.0,
        push_error: float = 0.0,
        push_timeout: float = PUSH_TIMEOUT,
    ) -> None:
        self.state = AlcorState(record=record)
        self.latency = latency
        self.host = host
        self._runners: list[web.ServerRunner] = []
        self._ports: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self.southbound = Southbound(
            self.state, self._loop, enabled=southbound, push_delay=push_delay, push_drop=push_drop,
            push_error=push_error, push_timeout=push_timeout,
        )  # fmt: skip
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-alcor", daemon=True)
        self._thread.start()
        try:
            for service in services or ("",):
                wanted = (ports or {}).get(service, 0)
                api = AlcorApi(self.state, service, self.southbound)
                self._ports[service] = self._call(self._listen(api, wanted))
        except BaseException:
            self.stop()
            raise

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _listen(self, api: AlcorApi, port: int) -> int:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            arrived = time.perf_counter()
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return web.json_response(spring_error(400, "JSON parse error", request.path_qs), status=400)
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            status, reply, service = api.respond(request.method, request.path_qs, body)
            payload = (
                b"" if reply is None else (reply if isinstance(reply, bytes) else json.dumps(reply).encode())
            )
            response = web.Response(status=status, body=payload, content_type="application/json")
            await response.prepare(request)
            await response.write_eof()
            held = time.perf_counter() - arrived  # until the answer is on its way
            with self.state.lock:
                self.state.times.append((time.monotonic(), request.method, service, held))
            return response

        runner = web.ServerRunner(web.Server(handle), access_log=None)
        await runner.setup()
        self._runners.append(runner)
        # A listen backlog like a real server's: agents open many connections at once.
        site = web.TCPSite(runner, self.host, port, backlog=1024, reuse_address=True)
        await site.start()
        return int(runner.addresses[-1][1])

    def port_of(self, service: str = "") -> int:
        """The port a service listens on ("" on the single-port fake)."""
        return self._ports[service]

    @property
    def url(self) -> str:
        """Base URL of the single-port fake, e.g. http://127.0.0.1:43123."""
        return f"http://{self.host}:{self.port_of(next(iter(self._ports)))}"

    @property
    def allow_entries(self) -> str:
        """The MERAK_CONTROL_PLANE_ALLOW entries that let Merak's services reach this server."""
        return ",".join(f"{self.host}:{port}" for port in self._ports.values())

    @property
    def pushing(self) -> bool:
        """Whether bound and deleted ports are pushed to their hosts (the switch; changes from now on)."""
        return self.southbound.enabled

    @pushing.setter
    def pushing(self, on: bool) -> None:
        self.southbound.enabled = on

    @property
    def push_delay(self) -> float:
        """Seconds waited before each push (what comes for the host meanwhile goes with it)."""
        return self.southbound.push_delay

    @push_delay.setter
    def push_delay(self, seconds: float) -> None:
        self.southbound.push_delay = seconds

    @property
    def push_drop(self) -> float:
        """The fraction (0..1) of pushes silently not sent."""
        return self.southbound.push_drop

    @push_drop.setter
    def push_drop(self, fraction: float) -> None:
        self.southbound.push_drop = fraction

    @property
    def push_error(self) -> float:
        """The fraction (0..1) of pushes sent without their ports' subnets (the host refuses them)."""
        return self.southbound.push_error

    @push_error.setter
    def push_error(self, fraction: float) -> None:
        self.southbound.push_error = fraction

    @property
    def push_timeout(self) -> float:
        """Seconds a push may take, its reply included."""
        return self.southbound.push_timeout

    @push_timeout.setter
    def push_timeout(self, seconds: float) -> None:
        self.southbound.push_timeout = seconds

    def stop(self) -> None:
        """Stop serving (open connections are closed), stop pushing (channels closed), end the thread."""
        if not self._thread.is_alive():
            return
        for runner in self._runners:
            self._call(runner.cleanup())
        self._call(self.southbound.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
