"""gRPC servicer of the agent: Merak's PortHandler / TestHandler / BulkPortAdd and the batch API."""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry

from merak.errors import FailedPrecondition, InvalidArgument, enum_name, status_for
from merak.grpcserver import ServiceRegistration
from merak.host import HostTuner
from merak.ids import check_ping_waits
from merak.logs import get_logger
from merak.naming import gateway_mac, vni_for_vpc
from merak.v1 import agent_pb2, agent_pb2_grpc, common_pb2, ntest_pb2
from services.agent.alcor import AlcorPorts, check_alcor_url, port_id_for, recorded_calls
from services.agent.metrics import AgentMetrics
from services.agent.models import Neighbor, PingResult, SubnetSpec, VmSpec, VpcSpec
from services.agent.planes import Plane, PlaneRegistry, known_planes
from services.agent.validation import host_ifname, validate_neighbor, validate_vm, validate_vpc
from services.agent.vhosts import Vhost, VhostSet

log = get_logger(__name__)
T = TypeVar("T")

SERVICE_NAME = "agent.MerakAgentService"
# Ports per PortHandlerBatch call (compute sends a batch of VMs, 250 by default).
MAX_PORT_BATCH = 1000
# What became of one port of a batch (PortHandler's reply, or the error it raised) and its Alcor calls.
PortOutcome = tuple[agent_pb2.AgentReturnInfo | Exception, list[agent_pb2.ControlPlaneCall]]


def _reason(error: str) -> str:
    """A low-cardinality failure label from a VM error message."""
    if error.startswith("already exists"):
        return "already_exists"
    if "not set up" in error or "vpc" in error:
        return "vpc_missing"
    return "kernel"


class AgentServicer(agent_pb2_grpc.MerakAgentServiceServicer):
    """agent.MerakAgentService for the vhosts of this agent."""

    def __init__(
        self,
        vhosts: VhostSet,
        *,
        alcor: AlcorPorts | None = None,
        workers: int = 4,
        host: HostTuner | None = None,
        planes: PlaneRegistry | None = None,
        metrics: AgentMetrics | None = None,
        management_netns: int | None = None,
    ) -> None:
        self.vhosts = vhosts
        # The process's metrics; a servicer built on the side (a test) gets a registry of its own.
        self.metrics = metrics if metrics is not None else AgentMetrics.create(CollectorRegistry())
        # Resolved up front: an unknown dataplane fails the agent at start, not its first request.
        self._plane_kind = (planes if planes is not None else known_planes()).get(vhosts.dataplane)
        # The process override (MERAK_ALCOR_URL); otherwise each port request names its Alcor.
        self.alcor = alcor
        self._alcor_clients: dict[str, AlcorPorts] = {}
        # An fd of the namespace the agent started in: Alcor is reached from there.
        self.management_netns = management_netns
        # Real VMs share the machine's neighbour table and namespace limit: sized before they grow.
        self.host = host
        self._planes: dict[str, Plane] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Subnets whose gateway each (vhost, VNI) serves: ensure_vpc converges to the whole set.
        self._subnets: dict[tuple[str, int], dict[str, SubnetSpec]] = {}
        self._specs: dict[tuple[str, str], VmSpec] = {}
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="agent-netns")

    async def close(self) -> None:
        """Stop the worker threads, release the host tuner, close the Alcor client."""
        self._executor.shutdown(wait=True)
        if self.host is not None:
            self.host.close()
        if self.alcor is not None:
            await self.alcor.close()
        for client in self._alcor_clients.values():
            await client.close()

    # --- plumbing ----------------------------------------------------------------------------

    def _vhost(self, name: str) -> Vhost:
        vhost = self.vhosts.vhosts.get(name)
        if vhost is None and not name and len(self.vhosts.vhosts) == 1:
            vhost = next(iter(self.vhosts.vhosts.values()))
        if vhost is None:
            served = ", ".join(list(self.vhosts.vhosts)[:5]) or "none"
            raise InvalidArgument("vhost", f"this agent does not serve vhost {name!r} (serves: {served}…)")
        return vhost

    def _plane(self, vhost: Vhost) -> Plane:
        plane = self._planes.get(vhost.name)
        if plane is None:
            plane = self._plane_kind.build(vhost)
            # VMs from before a restart (a fake plane starts empty).
            self.metrics.vms.inc(len(plane.list_vms()))
            self._planes[vhost.name] = plane
        return plane

    def _lock(self, vhost: Vhost) -> asyncio.Lock:
        return self._locks.setdefault(vhost.name, asyncio.Lock())

    async def _run(self, func: Callable[[], T]) -> T:
        # Kernel work blocks and enters namespaces (per thread): never on the event loop's thread.
        # A plane in memory is quicker than the hop to a thread, and a thread would compete with the
        # loop for the interpreter while the loop times calls to the control plane.
        if not self._plane_kind.touches_kernel:
            return func()
        return await asyncio.get_running_loop().run_in_executor(self._executor, func)

    async def _size_host(self, new_namespaces: int, reason: str) -> None:
        host = self.host
        if host is not None and self._plane_kind.touches_kernel:
            await self._run(partial(host.ensure_for_new, new_namespaces, reason=reason))

    def _vpc_with_known_subnets(self, vhost: Vhost, vpc: VpcSpec) -> VpcSpec:
        known = self._subnets.setdefault((vhost.name, vpc.vni), {})
        known.update((s.cidr, s) for s in vpc.subnets)
        return VpcSpec(vpc.vpc_id, vpc.vni, tuple(known.values()), vpc.gateway_mac)

    # --- batch API ---------------------------------------------------------------------------

    async def CreateVms(
        self, request: agent_pb2.CreateVmsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.CreateVmsReply:
        """Create many VMs (and their VPCs) in one vhost; invalid input rejects the whole batch."""
        vhost = self._vhost(request.vhost)
        vpcs = [_vpc_from_proto(f"vpcs[{i}]", v) for i, v in enumerate(request.vpcs)]
        specs = [_vm_from_proto(f"vms[{i}]", vm) for i, vm in enumerate(request.vms)]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise InvalidArgument("vms", "duplicate VM names in one batch")
        return await self._create(vhost, vpcs, specs, {vm.name: vm.id for vm in request.vms})

    async def _create(
        self, vhost: Vhost, vpcs: Sequence[VpcSpec], specs: Sequence[VmSpec], ids: dict[str, str]
    ) -> agent_pb2.CreateVmsReply:
        plane = self._plane(vhost)
        started = time.perf_counter()
        await self._size_host(len(specs) + len(vpcs), "vms created")
        async with self._lock(vhost):
            for vpc in vpcs:
                merged = self._vpc_with_known_subnets(vhost, vpc)
                await self._run(partial(plane.ensure_vpc, merged))
            results = await self._run(partial(plane.create_vms, specs))
        reply = agent_pb2.CreateVmsReply()
        for spec, result in zip(specs, results, strict=True):
            reply.results.add(
                name=result.name,
                ok=result.ok,
                error=result.error,
                created=result.created,
                status=common_pb2.DONE if result.ok else common_pb2.ERROR,
                id=ids.get(result.name, ""),
            )
            if result.ok:
                self._specs[(vhost.name, spec.name)] = spec
                if result.created:
                    reply.created += 1
                else:
                    reply.existing += 1
            else:
                reply.failed += 1
                self.metrics.failures.labels("create", _reason(result.error)).inc()
        self.metrics.vms.inc(reply.created)
        elapsed = time.perf_counter() - started
        if specs:
            self.metrics.vm_seconds.labels("create").observe(elapsed / len(specs))
        log.info(
            "vms_created",
            vhost=vhost.name,
            requested=len(specs),
            created=reply.created,
            existing=reply.existing,
            failed=reply.failed,
            seconds=round(elapsed, 3),
        )
        return reply

    async def DeleteVms(
        self, request: agent_pb2.DeleteVmsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.DeleteVmsReply:
        """Delete VMs by name (missing ones count as deleted), or every VM with `all`."""
        vhost = self._vhost(request.vhost)
        for i, name in enumerate(request.names):
            _check_vm_name(f"names[{i}]", name)
        return await self._delete(vhost, list(request.names), every=request.all)

    async def _delete(
        self, vhost: Vhost, names: list[str], *, every: bool = False
    ) -> agent_pb2.DeleteVmsReply:
        plane = self._plane(vhost)
        started = time.perf_counter()
        async with self._lock(vhost):
            if every:
                names = sorted(set(names) | set(await self._run(plane.list_vms)))
            results = await self._run(partial(plane.delete_vms, names))
            if not await self._run(plane.list_vms):
                # The last VM is gone: so go the VPC namespaces (bridge, VXLAN, forwarding entries).
                await self._run(plane.destroy)
                self._subnets = {k: v for k, v in self._subnets.items() if k[0] != vhost.name}
        reply = agent_pb2.DeleteVmsReply()
        gone = 0
        for result in results:
            reply.results.add(name=result.name, ok=result.ok, error=result.error, status=common_pb2.DELETING)
            if result.ok:
                reply.deleted += 1
                self._specs.pop((vhost.name, result.name), None)
                gone += result.created  # created=True here means "it existed and is gone"
            else:
                reply.failed += 1
                self.metrics.failures.labels("delete", _reason(result.error)).inc()
        self.metrics.vms.dec(gone)
        if names:
            self.metrics.vm_seconds.labels("delete").observe((time.perf_counter() - started) / len(names))
        log.info(
            "vms_deleted", vhost=vhost.name, requested=len(names), deleted=reply.deleted, failed=reply.failed
        )
        return reply

    async def SetVpcPeers(
        self, request: agent_pb2.SetVpcPeersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.SetVpcPeersReply:
        """Set the VNI's flood list and push or withdraw remote VMs' entries."""
        vhost = self._vhost(request.vhost)
        plane = self._plane(vhost)
        vteps = [_ipv4(f"vteps[{i}]", v) for i, v in enumerate(request.vteps)]
        added = [_neighbor(f"neighbors[{i}]", n) for i, n in enumerate(request.neighbors)]
        removed = [_neighbor(f"removed_neighbors[{i}]", n) for i, n in enumerate(request.removed_neighbors)]
        vni = request.vni
        # The overlay is programmed once every VM of the lab exists: the namespaces present now are
        # the lab the VMs' neighbour tables must hold.
        await self._size_host(0, "vpc peers set")
        async with self._lock(vhost):
            if not request.neighbors_only:
                await self._run(partial(plane.set_vni_peers, vni, vteps))
            if removed:
                await self._run(partial(plane.remove_neighbors, vni, removed))
            if added:
                await self._run(partial(plane.push_neighbors, vni, added))
        log.info("vpc_peers_set", vhost=vhost.name, vni=vni, vteps=len(vteps), neighbors=len(added))
        return agent_pb2.SetVpcPeersReply(vteps=len(vteps), neighbors=len(added))

    async def ListVms(
        self, request: agent_pb2.ListVmsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.ListVmsReply:
        """The VMs present in a vhost."""
        vhost = self._vhost(request.vhost)
        plane = self._plane(vhost)
        reply = agent_pb2.ListVmsReply(dataplane=self.vhosts.dataplane)
        for name in await self._run(plane.list_vms):
            spec = self._specs.get((vhost.name, name))
            vm = reply.vms.add(name=name, status=common_pb2.DONE)
            if spec is not None:
                vm.ip, vm.mac, vm.vpc_id, vm.vni = spec.ip, spec.mac, spec.vpc_id, spec.vni
                continue
            # Made before this agent started (it was restarted): the data plane knows the rest.
            info = await self._run(partial(plane.describe_vm, name))
            if info is not None:
                vm.ip, vm.mac, vm.vpc_id = info.ip, info.mac, info.vpc_id
        return reply

    async def Ping(
        self, request: agent_pb2.PingRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.PingReply:
        """ICMP echo from inside a VM, retried for `retry_seconds` while a destination stays silent."""
        vhost = self._vhost(request.vhost)
        _check_vm_name("vm", request.vm)
        check_ping_waits(request.timeout_seconds, request.retry_seconds)
        dests = [_ipv4(f"destinations[{i}]", d) for i, d in enumerate(request.destinations)]
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

    async def _ping(
        self, vhost: Vhost, vm: str, dests: Sequence[str], timeout: float, retry_seconds: float
    ) -> list[PingResult]:
        plane = self._plane(vhost)
        if vm not in await self._run(plane.list_vms):
            raise FailedPrecondition(f"vm {vm!r} does not exist in vhost {vhost.name!r}")
        deadline = time.monotonic() + retry_seconds
        pending = list(dests)
        done: dict[str, PingResult] = {}
        while True:
            results = await self._run(partial(plane.ping, vm, pending, timeout))
            done.update((r.dest, r) for r in results)
            pending = [r.dest for r in results if not r.ok]
            if not pending or time.monotonic() >= deadline:
                break
        return [done[d] for d in dests]

    # --- Merak's API -------------------------------------------------------------------------

    async def PortHandler(
        self, request: agent_pb2.InternalPortConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnInfo:
        """PRECREATE / CREATE / DELETE / UPDATE of one VM port, as Merak's agent (without its MODE bug);
        the reply lists the calls made into Alcor, timed."""
        reply, calls = await _recorded(self._port_handler(request))
        if isinstance(reply, BaseException):
            raise reply
        reply.calls.extend(calls)
        return reply

    async def PortHandlerBatch(
        self, request: agent_pb2.PortBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.PortBatchReply:
        """PortHandler for many ports of one vhost and operation: Alcor's calls go out side by side, a
        CREATE's VMs are made in one go; one result per port, each with its own status."""
        ports = list(request.ports)
        if len(ports) > MAX_PORT_BATCH:
            raise InvalidArgument("ports", f"{len(ports)} ports: at most {MAX_PORT_BATCH} per call")
        if not ports:
            return agent_pb2.PortBatchReply()
        first = ports[0]
        for i, port in enumerate(ports):
            if port.operation_type != first.operation_type:
                raise InvalidArgument(f"ports[{i}].operation_type", "one operation per batch")
            if (port.vhost or port.hostname) != (first.vhost or first.hostname):
                raise InvalidArgument(f"ports[{i}].vhost", "one vhost per batch")
        if first.operation_type == common_pb2.CREATE:
            outcomes = await self._create_ports(self._vhost(first.vhost or first.hostname), ports)
        else:
            outcomes = list(await asyncio.gather(*(_recorded(self._port_handler(p)) for p in ports)))
        reply = agent_pb2.PortBatchReply()
        for outcome, calls in outcomes:
            result = reply.results.add(calls=calls)
            if isinstance(outcome, BaseException):
                code, message = status_for(outcome)
                result.code, result.message = code.name, message
            else:
                result.code = grpc.StatusCode.OK.name
                result.reply.CopyFrom(outcome)
        return reply

    async def _create_ports(
        self, vhost: Vhost, ports: list[agent_pb2.InternalPortConfig]
    ) -> list[PortOutcome]:
        """CREATE of many ports: each checked and bound in Alcor (side by side), then the VMs made in
        one plane call."""

        async def prepare(port: agent_pb2.InternalPortConfig) -> tuple[VpcSpec, VmSpec]:
            _check_vm_name("name", port.name)
            return await self._prepare_create(vhost, port, self._alcor_for(port))

        prepared = await asyncio.gather(*(_recorded(prepare(p)) for p in ports))
        ready = [
            (p, specs) for p, (specs, _) in zip(ports, prepared, strict=True) if isinstance(specs, tuple)
        ]
        vpcs = list(dict.fromkeys(vpc for _, (vpc, _) in ready))  # one per VPC and subnet
        made = await self._create(vhost, vpcs, [vm for _, (_, vm) in ready], {p.name: p.id for p, _ in ready})
        results = {r.name: r for r in made.results}
        outcomes: list[PortOutcome] = []
        for port, (specs, calls) in zip(ports, prepared, strict=True):
            if isinstance(specs, tuple):
                outcomes.append((_created_reply(port, specs[1], results[port.name]), calls))
            else:
                outcomes.append((specs, calls))
        return outcomes

    async def _port_handler(self, request: agent_pb2.InternalPortConfig) -> agent_pb2.AgentReturnInfo:
        vhost = self._vhost(request.vhost or request.hostname)
        op = request.operation_type
        _check_vm_name("name", request.name)
        alcor = self._alcor_for(request)
        if op == common_pb2.PRECREATE:
            return await self._precreate(vhost, request, alcor)
        if op == common_pb2.CREATE:
            return await self._port_create(vhost, request, alcor)
        if op == common_pb2.DELETE:
            if alcor is not None and request.remoteid:
                await alcor.delete(project_id=request.projectid, port_id=request.remoteid)
            await self._delete(vhost, [request.name])
            return agent_pb2.AgentReturnInfo(
                return_code=common_pb2.OK,
                return_message="Delete Success!",
                port=agent_pb2.ReturnPortInfo(id=request.id, status=common_pb2.DELETING),
            )
        if op == common_pb2.UPDATE:
            if alcor is not None:
                raise FailedPrecondition("UPDATE of a port is not supported in alcor mode")
            await self._delete(vhost, [request.name])
            return await self._port_create(vhost, request, None)
        raise InvalidArgument(
            "operation_type", f"{enum_name(common_pb2.OperationType, op)} is not a port operation"
        )

    def _alcor_for(self, request: agent_pb2.InternalPortConfig) -> AlcorPorts | None:
        """The port manager of this request: the process override (MERAK_ALCOR_URL), else the request's
        `alcor_url` (one client per URL, kept), else none (native mode)."""
        if self.alcor is not None:
            return self.alcor
        if not request.alcor_url:
            return None
        url = check_alcor_url("alcor_url", request.alcor_url)
        client = self._alcor_clients.get(url)
        if client is None:
            client = self._alcor_clients[url] = AlcorPorts(
                url, netns_fd=self.management_netns, metrics=self.metrics.control_plane
            )
        return client

    async def _precreate(
        self, vhost: Vhost, request: agent_pb2.InternalPortConfig, alcor: AlcorPorts | None
    ) -> agent_pb2.AgentReturnInfo:
        if alcor is None:  # native: addresses come from the network service; nothing to do yet
            return agent_pb2.AgentReturnInfo(
                return_code=common_pb2.OK,
                return_message="Precreate not needed in native mode",
                port=agent_pb2.ReturnPortInfo(id=request.id, status=common_pb2.DEPLOYING),
            )
        for field in ("vpcid", "subnetid", "projectid"):
            if not getattr(request, field):
                raise InvalidArgument(field, "required for PRECREATE in alcor mode")
        port = await alcor.create_minimal(
            project_id=request.projectid,
            tenant_id=request.tenantid,
            vpc_id=request.vpcid,
            subnet_id=request.subnetid,
            security_group=request.sg,
            device_id=request.name,
            port_id=port_id_for(self.vhosts.topology_id, vhost.name, request.name),
        )
        return agent_pb2.AgentReturnInfo(
            return_code=common_pb2.OK,
            return_message="Precreate Success",
            port=agent_pb2.ReturnPortInfo(
                id=request.id, ip=port.ip, mac=port.mac, remoteid=port.port_id, deviceid=port.tap_name,
                status=common_pb2.DEPLOYING,
            ),
        )  # fmt: skip

    async def _port_create(
        self, vhost: Vhost, request: agent_pb2.InternalPortConfig, alcor: AlcorPorts | None
    ) -> agent_pb2.AgentReturnInfo:
        vpc, spec = await self._prepare_create(vhost, request, alcor)
        reply = await self._create(vhost, [vpc], [spec], {request.name: request.id})
        return _created_reply(request, spec, reply.results[0])

    async def _prepare_create(
        self, vhost: Vhost, request: agent_pb2.InternalPortConfig, alcor: AlcorPorts | None
    ) -> tuple[VpcSpec, VmSpec]:
        """A CREATE checked, and its port bound in Alcor (alcor mode): the VPC and VM to make."""
        for field in ("vpcid", "ip", "mac", "gw", "cidr"):
            if not getattr(request, field):
                raise InvalidArgument(field, "required for CREATE")
        try:
            network = ipaddress.IPv4Network(request.cidr, strict=False)
        except ValueError:
            raise InvalidArgument("cidr", f"{request.cidr!r} is not an IPv4 network") from None
        if alcor is not None:
            if not request.remoteid:
                raise InvalidArgument("remoteid", "required for CREATE in alcor mode (the PRECREATE port id)")
            await alcor.bind(
                project_id=request.projectid, tenant_id=request.tenantid, port_id=request.remoteid,
                vpc_id=request.vpcid, vm_name=request.name, host=request.hostname or vhost.name,
            )  # fmt: skip
        vni = vni_for_vpc(request.vpcid)
        vpc = _checked_vpc(
            "vpcid", VpcSpec(request.vpcid, vni, (SubnetSpec(str(network), request.gw),), gateway_mac(vni))
        )
        spec = _checked_vm(
            "name",
            VmSpec(
                request.name,
                request.vpcid,
                vni,
                request.ip,
                network.prefixlen,
                request.mac.lower(),
                request.gw,
            ),
        )
        return vpc, spec

    async def BulkPortAdd(
        self, request: agent_pb2.BulkPorts, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnInfo:
        """Merak added taps to OVS here; our ports are veth pairs made by CREATE: nothing to do."""
        return agent_pb2.AgentReturnInfo(
            return_code=common_pb2.OK,
            return_message=f"{len(request.tapnames)} ports: nothing to add (no OVS; CREATE makes the ports)",
        )

    async def TestHandler(
        self, request: agent_pb2.InternalTestTargetConfig, context: grpc.aio.ServicerContext[Any, Any]
    ) -> agent_pb2.AgentReturnTestInfo:
        """PINGALL from VM `src` to every `dest` (Merak declared it and never built it)."""
        vhost = self._vhost(request.vhost)
        _check_vm_name("src", request.src)
        dests = [_ipv4(f"dest[{i}]", d) for i, d in enumerate(request.dest)]
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


# --- proto → model, with errors naming the field -----------------------------------------------


def _created_reply(
    request: agent_pb2.InternalPortConfig, spec: VmSpec, result: agent_pb2.VmResult
) -> agent_pb2.AgentReturnInfo:
    """PortHandler's answer to a CREATE, from the VM's result."""
    if not result.ok:
        return agent_pb2.AgentReturnInfo(
            return_code=common_pb2.FAILED,
            return_message=f"Create failed: {result.error}",
            port=agent_pb2.ReturnPortInfo(id=request.id, status=common_pb2.ERROR),
        )
    return agent_pb2.AgentReturnInfo(
        return_code=common_pb2.OK,
        return_message="Create Success",
        port=agent_pb2.ReturnPortInfo(
            id=request.id, ip=request.ip, mac=spec.mac, remoteid=request.remoteid,
            deviceid=request.deviceid or host_ifname(request.name), status=common_pb2.DONE,
        ),
    )  # fmt: skip


async def _recorded(work: Awaitable[T]) -> tuple[T | Exception, list[agent_pb2.ControlPlaneCall]]:
    """Run `work`, collecting the Alcor calls it makes (its outcome, or the exception it raised)."""
    calls: list[tuple[str, str, float]] = []
    token = recorded_calls.set(calls)
    try:
        outcome: T | Exception = await work
    except Exception as exc:  # handed back: PortHandler raises it, a batch reports it for its port
        outcome = exc
    finally:
        recorded_calls.reset(token)
    return outcome, [agent_pb2.ControlPlaneCall(operation=o, code=c, seconds=t) for o, c, t in calls]


def _check_vm_name(field: str, name: str) -> None:
    _checked_vm(field, VmSpec(name, "v", 1, "10.0.0.2", 24, "02:00:00:00:00:01", "10.0.0.1"))


def _checked_vm(field: str, spec: VmSpec) -> VmSpec:
    try:
        validate_vm(spec)
    except ValueError as exc:
        raise InvalidArgument(field, str(exc)) from None
    return spec


def _checked_vpc(field: str, vpc: VpcSpec) -> VpcSpec:
    try:
        validate_vpc(vpc)
    except ValueError as exc:
        raise InvalidArgument(field, str(exc)) from None
    return vpc


def _vm_from_proto(field: str, vm: agent_pb2.VmSpec) -> VmSpec:
    return _checked_vm(
        field, VmSpec(vm.name, vm.vpc_id, vm.vni, vm.ip, vm.prefix_len, vm.mac.lower(), vm.gateway)
    )


def _vpc_from_proto(field: str, vpc: agent_pb2.VpcSpec) -> VpcSpec:
    subnets = tuple(SubnetSpec(s.cidr, s.gateway) for s in vpc.subnets)
    try:
        mac = vpc.gateway_mac or gateway_mac(vpc.vni)
    except ValueError as exc:  # a VNI beyond 24 bits (the VPC check would say so, after this)
        raise InvalidArgument(field, str(exc)) from None
    return _checked_vpc(field, VpcSpec(vpc.vpc_id, vpc.vni, subnets, mac.lower()))


def _ipv4(field: str, text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise InvalidArgument(field, f"{text!r} is not an IPv4 address") from None


def _neighbor(field: str, neighbor: agent_pb2.Neighbor) -> Neighbor:
    model = Neighbor(neighbor.ip, neighbor.mac.lower(), neighbor.vtep)
    try:
        validate_neighbor(model)
    except ValueError as exc:
        raise InvalidArgument(field, str(exc)) from None
    return model


def registration(servicer: AgentServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    add = agent_pb2_grpc.add_MerakAgentServiceServicer_to_server
    return ServiceRegistration(SERVICE_NAME, lambda server: add(servicer, server))
