"""The Alcor stand-in served: HTTP/1.1 (http.py) on an event loop of its own thread, one listener per Alcor
service or one for all, over one shared state."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from merak_tools.alcor_standin.api import AlcorApi, spring_error
from merak_tools.alcor_standin.http import Answer, Connection, Request
from merak_tools.alcor_standin.southbound import PUSH_TIMEOUT, Southbound
from merak_tools.alcor_standin.state import AlcorState
from merak_tools.alcor_standin.timer import PreciseTimer

ALCOR_SERVICES = ("vpc", "subnet", "router", "node", "sg", "port")
# Where Alcor's services answer on a Kubernetes node (its NodePorts), as Merak reaches them.
ALCOR_NODEPORTS = {"vpc": 30001, "subnet": 30002, "router": 30003, "port": 30006, "node": 30007, "sg": 30008}


class FakeAlcor:
    """An Alcor on `host` (free ports unless `ports` names them), served until `stop`.

    `latency` (seconds): every answer is made and written that long after its request's last byte was
    read (timer.py wakes it then), without holding anything up meanwhile; `state.times` keeps how long
    each was held, from that read to its answer's write (http.py).
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
        self._servers: list[asyncio.Server] = []
        self._connections: set[Connection] = set()
        self._ports: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._timer = PreciseTimer(self._loop)
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
        # A listen backlog like a real server's: agents open many connections at once.
        server = await self._loop.create_server(
            lambda: Connection(_Listener(self, api), self._timer.call_at, self._connections),
            self.host,
            port,
            backlog=1024,
            reuse_address=True,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

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

    async def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self._connections):
            connection.close()
        for server in self._servers:
            await server.wait_closed()

    def stop(self) -> None:
        """Stop serving (open connections are closed), stop pushing (channels closed), end the thread."""
        if not self._thread.is_alive():
            return
        self._call(self._close_listeners())
        self._call(self.southbound.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._timer.close()
        self._loop.close()


class _Listener:
    """What one listener answers (`api`), held for the fake's latency; each answer's time recorded."""

    def __init__(self, fake: FakeAlcor, api: AlcorApi) -> None:
        self._fake = fake
        self._api = api

    def due(self, request: Request) -> float:
        """`latency` after the request came."""
        return request.arrived + self._fake.latency

    def answer(self, request: Request) -> Answer:
        """Alcor's answer, as the API says; its time from the request's arrival recorded once written."""
        try:
            body = json.loads(request.body) if request.body else None
        except ValueError:
            return Answer(400, json.dumps(spring_error(400, "JSON parse error", request.target)).encode())
        status, reply, service = self._api.respond(request.method, request.target, body)
        payload = (
            b"" if reply is None else (reply if isinstance(reply, bytes) else json.dumps(reply).encode())
        )
        state = self._fake.state

        def written(at: float) -> None:
            with state.lock:
                state.times.append((time.monotonic(), request.method, service, at - request.arrived))

        return Answer(status, payload, written)
