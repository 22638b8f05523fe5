"""The interface every VM plugin implements (VmPlugin), and what they share: the record of a call into
the control plane under test, and how a gRPC error becomes a Temporal activity error."""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import ClassVar, NoReturn

import grpc
from temporalio.exceptions import ApplicationError

from merak.errors import PERMANENT_CODES, from_rpc_error, is_permanent
from merak.v1 import agent_pb2, agent_pb2_grpc, network_pb2_grpc
from services.compute.contracts import PluginName
from services.compute.store import Meta, VmRecord

ADDRESS_TIMEOUT = 120.0
PERMANENT_CODE_NAMES = frozenset(code.name for code in PERMANENT_CODES)


@dataclass(frozen=True, slots=True)
class Call:
    """One call into the control plane under test, for the scenario's results."""

    operation: str
    code: str
    seconds: float


Calls = list[Call]


def vm_spec(record: VmRecord, ovn_port: str = "") -> agent_pb2.VmSpec:
    """The agent's VmSpec of a VM record (with its OVN logical switch port, under ovn)."""
    return agent_pb2.VmSpec(
        name=record.name,
        vpc_id=record.vpc,
        vni=record.vni,
        ip=record.ip,
        prefix_len=record.prefix,
        mac=record.mac,
        gateway=record.gw,
        id=record.id,
        subnet_id=record.subnet,
        ovn_port=ovn_port,
    )


def raise_activity_error(exc: grpc.aio.AioRpcError, what: str) -> NoReturn:
    """A failed call to `what` ("agent CreateVms on vhost-1") as an activity failure of the code our
    callers would get (merak.errors.from_rpc_error): a permanent one is not retried, others are (by
    Temporal). The failure's text ends with the callee's code: no status carries it to the user."""
    error = from_rpc_error(exc, what)
    raise ApplicationError(
        error.described(), type=error.code.name, non_retryable=is_permanent(error.code)
    ) from exc


class VmPlugin(abc.ABC):
    """Creates and deletes one host's batch of VMs; records carry the outcome (status, error, addresses)."""

    name: ClassVar[PluginName]
    # The plugin's addresses come from one of our network configs (checked at CREATE).
    needs_network_config: ClassVar[bool]
    # The agents call Alcor's port manager (its URL travels with every port request).
    needs_alcor: ClassVar[bool] = False
    # Each host with VMs becomes an OVN chassis (its memory counts in the capacity check).
    runs_chassis: ClassVar[bool] = False

    def __init__(self, network: network_pb2_grpc.MerakNetworkServiceAsyncStub, agent_timeout: float) -> None:
        self.network = network
        self.agent_timeout = agent_timeout

    @abc.abstractmethod
    async def create(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        todo: list[VmRecord],
        calls: Calls,
    ) -> None:
        """Create the VMs of `todo` on `host`; a transient failure raises (the activity is retried)."""

    @abc.abstractmethod
    async def delete(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        records: list[VmRecord],
        calls: Calls,
    ) -> None:
        """Remove the VMs from their host (raises grpc errors as they are: the caller knows a gone host)."""

    async def create_hosts(
        self,
        agents: Mapping[str, agent_pb2_grpc.MerakAgentServiceAsyncStub],
        meta: Meta,
        todo: Mapping[str, list[VmRecord]],
        calls: Calls,
    ) -> dict[str, BaseException]:
        """Create the VMs of several hosts (a group of fake hosts), side by side; the hosts whose create
        failed, with their error (their records are not to be written). A plugin may share calls
        between the hosts (NativeVms: one address request)."""
        return await each_host(
            {h: self.create(agents[h], h, meta, records, calls) for h, records in todo.items()}
        )

    async def prepare(  # noqa: B027 - optional hook
        self, agent: agent_pb2_grpc.MerakAgentServiceAsyncStub, host: str, meta: Meta, calls: Calls
    ) -> None:
        """Ready `host` for this plugin's VMs before its first batch (nothing by default)."""

    async def release(self, meta: Meta, records: list[VmRecord], calls: Calls) -> None:  # noqa: B027
        """Give the VMs' addresses back, where this plugin took them."""


async def each_host(work: Mapping[str, Awaitable[None]]) -> dict[str, BaseException]:
    """Run one coroutine per host side by side, to the end; the hosts whose coroutine raised, with the
    error (a cancellation is not an error of a host: it goes on up)."""
    outcomes = await asyncio.gather(*work.values(), return_exceptions=True)
    failed: dict[str, BaseException] = {}
    for host, outcome in zip(work, outcomes, strict=True):
        if isinstance(outcome, asyncio.CancelledError):
            raise outcome
        if isinstance(outcome, BaseException):
            failed[host] = outcome
    return failed
