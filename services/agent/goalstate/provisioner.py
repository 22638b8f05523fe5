"""alcor.schema.GoalStateProvisioner as Alcor's Control Agent (ACA) serves it (alcor-southbound.md §3.5,
§4, §5): a goal state is read into a plan (plan.py), its work applied category by category — routers,
ports, neighbours, DHCP — each resource of a category side by side, and one reply carries a status per
resource in completion order with microsecond timings and the message's total time.

What ACA does and this keeps: `PushGoalStatesStream` reads the first message, answers once and ends the
call (NCM sends one message per stream and waits for the end); statuses for PORT, ROUTER and DHCP, and
for NEIGHBOR on the V1 path only; a port whose device does not exist yet is PENDING and retried in the
background (every second, up to 300 times) with no later status; a neighbour on this host's own address
needs nothing; a bad resource is INVALID_ARG and the others go on; an error while applying is FAILURE,
never a crash of the call. How a host applies the work is the `Applier`'s business (the kernel's
overlay for a real host, a record for a fake one).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc

from alcor.schema import goalstate_pb2, goalstateprovisioner_pb2, goalstateprovisioner_pb2_grpc
from merak.grpcserver import ServiceRegistration
from merak.logs import get_logger
from services.agent.goalstate.plan import (
    DHCP,
    FAILURE,
    INVALID_ARG,
    NEIGHBOR,
    PENDING,
    PORT,
    ROUTER,
    SUCCESS,
    DhcpWork,
    NeighborWork,
    Plan,
    PortWork,
    RouterWork,
    from_v1,
    from_v2,
)

log = get_logger(__name__)
W = TypeVar("W", RouterWork, PortWork, NeighborWork, DhcpWork)

Reply = goalstateprovisioner_pb2.GoalStateOperationReply
PENDING_RETRY_SECONDS = 1.0
PENDING_RETRIES = 300
_US = 1_000_000
_MAX_UINT32 = (1 << 32) - 1


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one resource gave: an OperationStatus, and the microseconds spent programming."""

    status: int = SUCCESS
    dataplane_us: int = 0


class Applier(Protocol):
    """How one host applies the work of a goal state; `neighbor_batch` takes a goal state's neighbours at
    once (one outcome each, in order), as a host programs them in one go."""

    async def router(self, work: RouterWork) -> Outcome: ...
    async def port(self, work: PortWork) -> Outcome: ...
    async def neighbor_batch(self, works: Sequence[NeighborWork]) -> list[Outcome]: ...
    async def dhcp(self, work: DhcpWork) -> Outcome: ...


def _add_status(
    reply: goalstateprovisioner_pb2.GoalStateOperationReply,
    kind: int,
    resource_id: str,
    operation: int,
    done: tuple[Outcome, float],
) -> None:
    outcome, seconds = done
    reply.operation_statuses.add(
        resource_id=resource_id,
        resource_type=kind,
        operation_type=operation,
        operation_status=outcome.status,
        dataplane_programming_time=min(_MAX_UINT32, outcome.dataplane_us),
        network_configuration_time=0,
        state_elapse_time=_us(seconds),
    )


def _us(seconds: float) -> int:
    return min(_MAX_UINT32, max(0, round(seconds * _US)))


@dataclass
class Provisioner:
    """Applies plans through an Applier and answers as ACA does. `local_ips`: this host's own addresses
    (a neighbour there needs nothing)."""

    applier: Applier
    local_ips: Collection[str] = frozenset()
    retry_seconds: float = PENDING_RETRY_SECONDS
    retries: int = PENDING_RETRIES
    _pending: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _kicks: dict[str, asyncio.Event] = field(default_factory=dict)  # retry a pending port now
    # When each port's CREATE was applied (time.monotonic()), and who waits for ports not yet applied.
    _ready: dict[str, float] = field(default_factory=dict)
    _waiters: dict[str, list[asyncio.Future[float]]] = field(default_factory=dict)
    applied: int = 0  # goal states answered

    async def apply(
        self, plan: Plan, *, neighbor_statuses: bool
    ) -> goalstateprovisioner_pb2.GoalStateOperationReply:
        """Apply the plan (routers, ports, neighbours, DHCP in turn); the reply."""
        started = time.perf_counter()
        reply = Reply()
        for refused in plan.refused:
            if refused.type != NEIGHBOR or neighbor_statuses:
                reply.operation_statuses.add(
                    resource_id=refused.id,
                    resource_type=refused.type,
                    operation_type=refused.operation,
                    operation_status=INVALID_ARG,
                )
                log.info("goal_state_refused", resource=refused.id, reason=refused.reason)
        await self._category(
            reply, ROUTER, [(w.id, w.operation, self._call(self.applier.router, w)) for w in plan.routers]
        )
        await self._category(reply, PORT, [(w.id, w.operation, self._port(w)) for w in plan.ports])
        local = self.local_ips
        remote = [w for w in plan.neighbors if w.host_ip not in local]
        outcomes = iter(await self._neighbors(remote))
        if neighbor_statuses:  # V1 only: a status per neighbour (a neighbour here needs nothing)
            for w in plan.neighbors:
                done = (Outcome(SUCCESS), 0.0) if w.host_ip in local else next(outcomes)
                _add_status(reply, NEIGHBOR, w.id, w.operation, done)
        await self._category(
            reply, DHCP, [(w.id, w.operation, self._call(self.applier.dhcp, w)) for w in plan.dhcp]
        )
        reply.message_total_operation_time = _us(time.perf_counter() - started)
        self.applied += 1
        return reply

    async def _category(
        self,
        reply: goalstateprovisioner_pb2.GoalStateOperationReply,
        kind: int,
        work: Sequence[tuple[str, int, Awaitable[tuple[Outcome, float]]]],
    ) -> None:
        """Every resource of one category side by side; statuses in completion order."""

        async def run(resource_id: str, operation: int, done: Awaitable[tuple[Outcome, float]]) -> None:
            _add_status(reply, kind, resource_id, operation, await done)

        await asyncio.gather(*(run(*item) for item in work))

    async def _call(self, apply: Callable[[W], Awaitable[Outcome]], work: W) -> tuple[Outcome, float]:
        """Apply one resource, timed; an error is FAILURE (logged), never the call's end."""
        started = time.perf_counter()
        try:
            outcome = await apply(work)
        except Exception as exc:
            log.warning("goal_state_resource_failed", resource=work.id, error=str(exc)[:300])
            outcome = Outcome(FAILURE)
        return outcome, time.perf_counter() - started

    async def _neighbors(self, works: Sequence[NeighborWork]) -> list[tuple[Outcome, float]]:
        """A goal state's remote neighbours in one batch, timed as one; an error is FAILURE for each."""
        if not works:
            return []
        started = time.perf_counter()
        try:
            outcomes = await self.applier.neighbor_batch(works)
        except Exception as exc:
            log.warning("goal_state_neighbors_failed", neighbors=len(works), error=str(exc)[:300])
            outcomes = [Outcome(FAILURE)] * len(works)
        seconds = time.perf_counter() - started
        return [(outcome, seconds) for outcome in outcomes]

    async def _port(self, work: PortWork) -> tuple[Outcome, float]:
        """A port; PENDING (its device is not there yet) is retried in the background, as ACA does."""
        outcome, seconds = await self._call(self.applier.port, work)
        if outcome.status == PENDING and not work.delete:
            self._retry_later(work)
        elif work.id in self._pending:  # a later state of the same port replaces the retry
            self._pending.pop(work.id).cancel()
        self._settled(work, outcome.status)
        return outcome, seconds

    def _settled(self, work: PortWork, status: int) -> None:
        """Note a port applied (its waiters learn when), or gone."""
        if work.delete:
            self._ready.pop(work.id, None)
        elif status == SUCCESS:
            now = self._ready[work.id] = time.monotonic()
            for waiter in self._waiters.pop(work.id, []):
                if not waiter.done():
                    waiter.set_result(now)

    async def wait_ready(self, port_id: str, timeout: float) -> float | None:
        """When (time.monotonic()) the port's CREATE was applied here, waiting up to `timeout` seconds for
        it; None if it was not. A port pending for its device is tried again at once (its VM may be
        there now)."""
        if port_id in self._ready:
            return self._ready[port_id]
        kick = self._kicks.get(port_id)
        if kick is not None:
            kick.set()
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(port_id, []).append(waiter)
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(port_id, [])
            if waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[port_id]

    def _retry_later(self, work: PortWork) -> None:
        previous = self._pending.pop(work.id, None)
        if previous is not None:
            previous.cancel()
        self._pending[work.id] = asyncio.get_running_loop().create_task(self._retry(work))

    async def _retry(self, work: PortWork) -> None:
        kick = self._kicks[work.id] = asyncio.Event()
        try:
            for _ in range(self.retries):
                # Every retry_seconds, as ACA, or at once when someone knows the device is there now.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(kick.wait(), self.retry_seconds)
                kick.clear()
                outcome, _seconds = await self._call(self.applier.port, work)
                if outcome.status != PENDING:
                    log.info("goal_state_port_applied_later", port=work.id, status=outcome.status)
                    self._settled(work, outcome.status)
                    return
            log.warning("goal_state_port_never_appeared", port=work.id, device=work.tap)
        finally:
            if self._pending.get(work.id) is asyncio.current_task():
                del self._pending[work.id]
            if self._kicks.get(work.id) is kick:
                del self._kicks[work.id]

    @property
    def pending(self) -> list[str]:
        """The ports waiting for their device."""
        return sorted(self._pending)

    async def close(self) -> None:
        """Stop the retries."""
        tasks = list(self._pending.values())
        self._pending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class GoalStateProvisionerServicer(goalstateprovisioner_pb2_grpc.GoalStateProvisionerServicer):
    """The gRPC face: V1 unary and V2 streaming, as ACA answers them; `pick` chooses the Provisioner of
    the host a goal state names (its host_resources keys; V1: its ports' host_info). RequestGoalStates and
    PushGoalstates are NCM's and Arion's, not an agent's: UNIMPLEMENTED."""

    def __init__(self, pick: Callable[[Collection[str]], Provisioner]) -> None:
        self.pick = pick

    async def PushNetworkResourceStates(
        self, request: goalstate_pb2.GoalState, context: grpc.aio.ServicerContext[Any, Any]
    ) -> goalstateprovisioner_pb2.GoalStateOperationReply:
        hosts = {p.configuration.host_info.ip_address for p in request.port_states} - {""}
        return await self.pick(hosts).apply(from_v1(request), neighbor_statuses=True)

    async def PushGoalStatesStream(
        self,
        request_iterator: AsyncIterator[goalstate_pb2.GoalStateV2],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[goalstateprovisioner_pb2.GoalStateOperationReply]:
        # The first message only, one reply, then the call ends (NCM never half-closes its streams).
        async for message in request_iterator:
            provisioner = self.pick(list(message.host_resources))
            yield await provisioner.apply(from_v2(message), neighbor_statuses=False)
            return

    async def RequestGoalStates(
        self, request: goalstateprovisioner_pb2.HostRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> goalstateprovisioner_pb2.HostRequestReply:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "RequestGoalStates is NCM's, not a host agent's")
        raise AssertionError("unreachable")  # abort raises

    async def PushGoalstates(
        self,
        request: goalstateprovisioner_pb2.NeighborRulesRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> goalstateprovisioner_pb2.GoalStateOperationReply:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "PushGoalstates is Arion's, not a host agent's")
        raise AssertionError("unreachable")  # abort raises


def registration(servicer: GoalStateProvisionerServicer) -> ServiceRegistration:
    """How to put the servicer on a server (health and reflection under Alcor's service name)."""
    add = goalstateprovisioner_pb2_grpc.add_GoalStateProvisionerServicer_to_server
    name = goalstateprovisioner_pb2.DESCRIPTOR.services_by_name["GoalStateProvisioner"].full_name
    return ServiceRegistration(name, lambda server: add(servicer, server))
