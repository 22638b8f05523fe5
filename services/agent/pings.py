"""The agent's reachability checks: Ping from inside a VM, and Merak's TestHandler (PINGALL).

A ping waits for silent destinations (up to 30 s a request, and retries for up to 120 s): pings run on
threads of their own, at most `limit` requests at once, so that a burst of them never holds the threads
that make and remove VMs. One more is refused with RESOURCE_EXHAUSTED, not queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from merak.errors import FailedPrecondition, ResourceExhausted
from merak.ids import check_ping_waits
from merak.v1 import agent_pb2, common_pb2, ntest_pb2
from services.agent import convert
from services.agent.models import PingResult
from services.agent.vhost_planes import VhostPlanes
from services.agent.vhosts import Vhost

# Ping and TestHandler requests an agent serves at once (AgentSettings.max_pings_in_flight): above the
# scenario service's pings in flight for a whole test (test_concurrency, 32), which may all go to one
# agent serving many vhosts.
MAX_PINGS_IN_FLIGHT = 64

T = TypeVar("T")


class _Slot:
    """One request's place among the pings in flight: held until the request has ended and its work on a
    ping thread too (a cancelled request's thread runs on until its echo times out)."""

    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release
        self.job: Future[Any] | None = None

    def leave(self) -> None:
        """The request ended: free the place now, or once its thread's work ends."""
        job = self.job
        if job is None or job.done():
            self._release()
            return
        loop = asyncio.get_running_loop()

        def done(_: Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to count
                loop.call_soon_threadsafe(self._release)

        job.add_done_callback(done)


class PingOperations:
    """ICMP echo through each vhost's plane, retried while a destination stays silent; at most `limit`
    requests at once, each on a thread of the pings' own pool (never one of the agent's `workers`)."""

    def __init__(self, planes: VhostPlanes, limit: int = MAX_PINGS_IN_FLIGHT) -> None:
        if limit < 1:
            raise ValueError(f"pings in flight: need at least 1, got {limit}")
        self._planes = planes
        self.limit = limit
        self.in_flight = 0
        # As many threads as places, made on demand: a request's work never waits in the pool's queue.
        self._executor = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="agent-ping")

    def close(self) -> None:
        """Stop the ping threads (one still waiting for a silent destination ends at its timeout)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _enter(self) -> _Slot:
        """A place among the `limit` requests in flight, or ResourceExhausted naming the limit."""
        if self.in_flight >= self.limit:
            raise ResourceExhausted(
                f"this agent serves {self.in_flight} pings at once already, its limit "
                "(max_pings_in_flight, MERAK_MAX_PINGS_IN_FLIGHT): try again when some end"
            )
        self.in_flight += 1
        return _Slot(self._release)

    def _release(self) -> None:
        self.in_flight -= 1

    async def _run(self, slot: _Slot, func: Callable[[], T]) -> T:
        """`func()` on a ping thread when the plane works in the kernel (as VhostPlanes.run does on the
        agent's workers), its job kept by `slot`."""
        if not self._planes.kind.touches_kernel:
            return func()
        slot.job = self._executor.submit(func)
        return await asyncio.wrap_future(slot.job)

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
        slot = self._enter()
        try:
            plane = self._planes.plane(vhost)
            if vm not in await self._run(slot, plane.list_vms):
                raise FailedPrecondition(f"vm {vm!r} does not exist in vhost {vhost.name!r}")
            deadline = time.monotonic() + retry_seconds
            pending = list(dests)
            done: dict[str, PingResult] = {}
            while True:
                results = await self._run(slot, partial(plane.ping, vm, pending, timeout))
                done.update((r.dest, r) for r in results)
                pending = [r.dest for r in results if not r.ok]
                if not pending or time.monotonic() >= deadline:
                    break
            return [done[d] for d in dests]
        finally:
            slot.leave()
