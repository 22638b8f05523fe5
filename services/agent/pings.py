"""The agent's reachability checks: Ping from inside a VM, and Merak's TestHandler (PINGALL)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

from merak.errors import FailedPrecondition
from merak.ids import check_ping_waits
from merak.v1 import agent_pb2, common_pb2, ntest_pb2
from services.agent import convert
from services.agent.models import PingResult
from services.agent.vhost_planes import VhostPlanes
from services.agent.vhosts import Vhost


class PingOperations:
    """ICMP echo through each vhost's plane, retried while a destination stays silent."""

    def __init__(self, planes: VhostPlanes) -> None:
        self._planes = planes

    async def ping(self, request: agent_pb2.PingRequest) -> agent_pb2.PingReply:
        """Ping: from inside a VM, retried for `retry_seconds` while a destination stays silent."""
        vhost = self._planes.vhost(request.vhost)
        convert.vm_name("vm", request.vm)
        check_ping_waits(request.timeout_seconds, request.retry_seconds)
        dests = [convert.ipv4(f"destinations[{i}]", d) for i, d in enumerate(request.destinations)]
        results = await self._ping(
            vhost, request.vm, dests, request.timeout_seconds or 1.0, request.retry_seconds
        )
        reply = agent_pb2.PingReply()
        for result in results:
            reply.results.add(
                destination=result.dest, ok=result.ok, rtt_ms=result.rtt_ms or 0.0, error=result.error
            )
        reply.passed = sum(r.ok for r in results)
        reply.failed = len(results) - reply.passed
        return reply

    async def test(self, request: agent_pb2.InternalTestTargetConfig) -> agent_pb2.AgentReturnTestInfo:
        """TestHandler: PINGALL from VM `src` to every `dest` (Merak declared it and never built it)."""
        vhost = self._planes.vhost(request.vhost)
        convert.vm_name("src", request.src)
        dests = [convert.ipv4(f"dest[{i}]", d) for i, d in enumerate(request.dest)]
        results = await self._ping(vhost, request.src, dests, 1.0, 3.0)
        failed = [r for r in results if not r.ok]
        message = f"{len(results) - len(failed)} of {len(results)} destinations answered"
        if failed:
            message += "; failed: " + ", ".join(f"{r.dest} ({r.error})" for r in failed[:10])
        return agent_pb2.AgentReturnTestInfo(
            return_code=common_pb2.OK if not failed else common_pb2.FAILED,
            return_message=message,
            results=ntest_pb2.PASSED if not failed else ntest_pb2.FAILED,
        )

    async def _ping(
        self, vhost: Vhost, vm: str, dests: Sequence[str], timeout: float, retry_seconds: float
    ) -> list[PingResult]:
        """One result per dest, in order: the silent ones asked again until `retry_seconds` pass."""
        plane = self._planes.plane(vhost)
        if vm not in await self._planes.run(plane.list_vms):
            raise FailedPrecondition(f"vm {vm!r} does not exist in vhost {vhost.name!r}")
        deadline = time.monotonic() + retry_seconds
        pending = list(dests)
        done: dict[str, PingResult] = {}
        while True:
            results = await self._planes.run(partial(plane.ping, vm, pending, timeout))
            done.update((r.dest, r) for r in results)
            pending = [r.dest for r in results if not r.ok]
            if not pending or time.monotonic() >= deadline:
                break
        return [done[d] for d in dests]
