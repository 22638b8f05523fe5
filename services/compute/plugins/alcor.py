"""The alcor VM plugin, Merak's flow: PRECREATE (an Alcor port: IP, MAC, port id), then CREATE (bind and
build), the agents calling Alcor's port manager."""

from __future__ import annotations

import grpc
from temporalio.exceptions import ApplicationError

from merak.naming import vni_for_vpc
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from services.compute.contracts import PluginName
from services.compute.plugins.base import (
    PERMANENT_CODE_NAMES,
    Call,
    Calls,
    VmPlugin,
    raise_activity_error,
)
from services.compute.store import Meta, VmRecord

# How long a VM's CREATE waits for Alcor's goal state for its port to be applied on its host (the VM is
# ready then), when the overlay comes from goal states only.
GOALSTATE_TIMEOUT = 60.0
# The results' operation for the time from a port's POST to Alcor until its host applied its goal state.
DATA_PLANE_READY = "data_plane_ready"


def _port(
    record: VmRecord, op: common_pb2.OperationType.ValueType, host: str, meta: Meta, goalstate_timeout: float
) -> agent_pb2.InternalPortConfig:
    """The PortHandler request of a VM."""
    waits = op == common_pb2.CREATE and not meta.alcor_own_overlay
    return agent_pb2.InternalPortConfig(
        operation_type=op,
        id=record.id,
        name=record.name,
        vpcid=record.vpc,
        tenantid=record.tenant,
        projectid=record.project,
        subnetid=record.subnet,
        gw=record.gw,
        sg=record.sgs[0] if record.sgs else "",
        cidr=record.cidr,
        hostname=host,
        remoteid=record.remote,
        deviceid=record.device,
        ip=record.ip,
        mac=record.mac,
        vhost=host,
        alcor_url=meta.alcor_url,
        goalstate_timeout_seconds=goalstate_timeout if waits else 0.0,
    )


class AlcorVms(VmPlugin):
    """Merak's flow: PRECREATE (Alcor port: IP, MAC, port id), then CREATE (bind + build), per VM; a
    batch's VMs go to the agent in one PortHandlerBatch call per step."""

    name = PluginName.ALCOR
    needs_network_config = False
    needs_alcor = True
    goalstate_timeout = GOALSTATE_TIMEOUT  # compute's setting (alcor_goalstate_timeout)

    async def _ports(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        records: list[VmRecord],
        *,
        op: common_pb2.OperationType.ValueType,
        calls: Calls,
    ) -> list[tuple[VmRecord, agent_pb2.PortResult]]:
        """One PortHandlerBatch step. A port that failed permanently marks its VM ERROR and is left out
        of the answer; one that failed for a passing reason fails the activity (Temporal retries the
        batch: the ports already made are found again, not made twice)."""
        if not records:
            return []
        request = agent_pb2.PortBatchRequest(
            ports=[_port(r, op, host, meta, self.goalstate_timeout) for r in records]
        )
        reply = await agent.PortHandlerBatch(request, timeout=self.agent_timeout)
        done: list[tuple[VmRecord, agent_pb2.PortResult]] = []
        passing: list[str] = []
        for record, result in zip(records, reply.results, strict=True):
            calls.extend(Call(c.operation, c.code, c.seconds) for c in result.calls)
            if result.code == grpc.StatusCode.OK.name:
                done.append((record, result))
            elif result.code in PERMANENT_CODE_NAMES:
                record.status, record.error = common_pb2.ERROR, f"{result.code}: {result.message}"
            else:
                passing.append(f"{record.name}: {result.code}: {result.message}")
        if passing:
            raise ApplicationError(
                f"agent PortHandlerBatch on {host}: {len(passing)} ports failed, first {passing[0]}",
                type="PortsFailed",
            )
        return done

    async def create(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        todo: list[VmRecord],
        calls: Calls,
    ) -> None:
        """PRECREATE the VMs without an Alcor port yet, then CREATE those that have one."""
        fresh = [r for r in todo if not r.remote]
        try:
            made = await self._ports(agent, host, meta, fresh, op=common_pb2.PRECREATE, calls=calls)
            for record, result in made:
                port = result.reply.port
                record.ip, record.mac = port.ip, port.mac
                record.remote, record.device = port.remoteid, port.deviceid
            ready = [r for r in todo if r.remote and r.status != common_pb2.ERROR]
            bound = await self._ports(agent, host, meta, ready, op=common_pb2.CREATE, calls=calls)
        except grpc.aio.AioRpcError as exc:
            raise_activity_error(exc, f"agent PortHandlerBatch on {host}")
        waited = not meta.alcor_own_overlay
        for record, result in bound:
            ok = result.reply.return_code == common_pb2.OK
            record.status = common_pb2.DONE if ok else common_pb2.ERROR
            record.error = "" if ok else result.reply.return_message
            if waited:
                # Time to data plane ready (from the port's POST until its host applied Alcor's goal state),
                # beside Alcor's REST calls in the results; one that never came is counted as an error.
                seconds = result.reply.port.goalstate_seconds
                if ok and seconds > 0:
                    calls.append(Call(DATA_PLANE_READY, "OK", seconds))
                elif result.reply.port.goalstate_missing:
                    calls.append(Call(DATA_PLANE_READY, "DEADLINE_EXCEEDED", self.goalstate_timeout))
            # The agent puts the VM in the VPC's overlay under this VNI: the overlay step needs it.
            record.vni = vni_for_vpc(record.vpc)

    async def delete(
        self,
        agent: agent_pb2_grpc.MerakAgentServiceAsyncStub,
        host: str,
        meta: Meta,
        records: list[VmRecord],
        calls: Calls,
    ) -> None:
        """PortHandler DELETE of the batch's VMs in one call (the agent removes the Alcor ports and
        the VMs); a port that cannot be removed fails the batch."""
        done = await self._ports(agent, host, meta, records, op=common_pb2.DELETE, calls=calls)
        if len(done) < len(records):
            failed = [r for r in records if r.status == common_pb2.ERROR]
            raise ApplicationError(
                f"agent PortHandlerBatch DELETE on {host}: {len(failed)} ports not removed, "
                f"first {failed[0].name}: {failed[0].error}",
                type="PortsFailed",
                non_retryable=True,
            )
