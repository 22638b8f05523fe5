"""The agent's batch API for VMs: create (with their VPCs), delete and list the VMs of a vhost."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial

from merak.errors import FailedPrecondition, InvalidArgument
from merak.logs import get_logger
from merak.v1 import agent_pb2, common_pb2
from services.agent import convert
from services.agent.metrics import AgentMetrics
from services.agent.models import SubnetSpec, VmSpec, VpcSpec
from services.agent.ovn import ChassisSet
from services.agent.validation import host_ifname
from services.agent.vhost_planes import VhostPlanes
from services.agent.vhosts import Vhost

log = get_logger(__name__)


def _reason(error: str) -> str:
    """A low-cardinality failure label from a VM error message."""
    if error.startswith("already exists"):
        return "already_exists"
    if "not set up" in error or "vpc" in error:
        return "vpc_missing"
    return "kernel"


class VmOperations:
    """VMs made, removed and listed through each vhost's plane, counted in the agent's metrics."""

    def __init__(self, planes: VhostPlanes, metrics: AgentMetrics, chassis: ChassisSet) -> None:
        self._planes = planes
        self._metrics = metrics
        # VMs on OVN ports are plugged into their vhost's chassis (EnsureChassis made it).
        self._chassis = chassis
        # Subnets whose gateway each (vhost, VNI) serves: ensure_vpc converges to the whole set.
        # vhost name -> VNI -> the subnets asked for so far, by CIDR (a vhost's whole entry goes with its
        # last VM: keyed by (vhost, VNI) it took a pass over every vhost's, 10,000 of them in the million).
        self._subnets: dict[str, dict[int, dict[str, SubnetSpec]]] = {}
        # The spec of each VM a plane in the kernel made, by vhost then name (a plane in memory keeps its
        # VMs' specs itself: a million fake VMs held twice, and a tuple key each, were ~100 MB).
        self._specs: dict[str, dict[str, VmSpec]] = {}
        self._keep_specs = planes.kind.touches_kernel

    async def create_vms(self, request: agent_pb2.CreateVmsRequest) -> agent_pb2.CreateVmsReply:
        """CreateVms: the request checked whole (invalid input rejects the batch), then made."""
        vhost = self._planes.vhost(request.vhost)
        vpcs = [convert.vpc_spec(f"vpcs[{i}]", v) for i, v in enumerate(request.vpcs)]
        specs = [convert.vm_spec(f"vms[{i}]", vm) for i, vm in enumerate(request.vms)]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise InvalidArgument("vms", "duplicate VM names in one batch")
        return await self.create(vhost, vpcs, specs, {vm.name: vm.id for vm in request.vms})

    async def delete_vms(self, request: agent_pb2.DeleteVmsRequest) -> agent_pb2.DeleteVmsReply:
        """DeleteVms: by name (missing ones count as deleted), or every VM with `all`."""
        vhost = self._planes.vhost(request.vhost)
        for i, name in enumerate(request.names):
            convert.vm_name(f"names[{i}]", name)
        return await self.delete(vhost, list(request.names), every=request.all)

    async def list_vms(self, request: agent_pb2.ListVmsRequest) -> agent_pb2.ListVmsReply:
        """ListVms: the VMs present in a vhost, with what this agent or the plane knows of each."""
        vhost = self._planes.vhost(request.vhost)
        plane = self._planes.plane(vhost)
        reply = agent_pb2.ListVmsReply(dataplane=self._planes.kind.name)
        specs = self._specs.get(vhost.name, {})
        for name in await self._planes.run(plane.list_vms):
            spec = specs.get(name) or plane.vm_spec(name)
            vm = reply.vms.add(name=name, status=common_pb2.DONE)
            if spec is not None:
                vm.ip, vm.mac, vm.vpc_id, vm.vni = spec.ip, spec.mac, spec.vpc_id, spec.vni
                continue
            # Made before this agent started (it was restarted): the data plane knows the rest.
            info = await self._planes.run(partial(plane.describe_vm, name))
            if info is not None:
                vm.ip, vm.mac, vm.vpc_id = info.ip, info.mac, info.vpc_id
        return reply

    async def create(
        self, vhost: Vhost, vpcs: Sequence[VpcSpec], specs: Sequence[VmSpec], ids: dict[str, str]
    ) -> agent_pb2.CreateVmsReply:
        """Ensure the VPCs, then make the VMs that do not exist; one result per VM, with its id."""
        plane = self._planes.plane(vhost)
        started = time.perf_counter()
        await self._planes.size_host(len(specs) + len(vpcs), "vms created")
        async with self._planes.lock(vhost):
            for vpc in vpcs:
                merged = self._with_known_subnets(vhost, vpc)
                await self._planes.run(partial(plane.ensure_vpc, merged))
            on_ovn = [s for s in specs if s.ovn_port]
            if on_ovn and self._chassis.running(vhost) is None:
                raise FailedPrecondition(
                    f"vhost {vhost.name} is not an OVN chassis: VMs on OVN ports need EnsureChassis first"
                )
            results = await self._planes.run(partial(plane.create_vms, specs))
            made = {r.name for r in results if r.ok}
            # One OVS transaction for the batch; ovn-controller binds each port as it sees it.
            plugs = [(host_ifname(s.name), s.ovn_port) for s in on_ovn if s.name in made]
            await self._chassis.plug(vhost, plugs)
        reply = agent_pb2.CreateVmsReply()
        known = self._specs.setdefault(vhost.name, {})
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
                if self._keep_specs:
                    known[spec.name] = spec
                if result.created:
                    reply.created += 1
                else:
                    reply.existing += 1
            else:
                reply.failed += 1
                self._metrics.failures.labels("create", _reason(result.error)).inc()
        self._metrics.vms.inc(reply.created)
        elapsed = time.perf_counter() - started
        if specs:
            self._metrics.vm_seconds.labels("create").observe(elapsed / len(specs))
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

    async def delete(
        self, vhost: Vhost, names: list[str], *, every: bool = False
    ) -> agent_pb2.DeleteVmsReply:
        """Remove the named VMs (every VM with `every`); the vhost's VPCs go with its last VM."""
        plane = self._planes.plane(vhost)
        run = self._planes.run
        started = time.perf_counter()
        async with self._planes.lock(vhost):
            if every:
                names = sorted(set(names) | set(await run(plane.list_vms)))
            await self._chassis.unplug(vhost, [host_ifname(name) for name in names])
            results = await run(partial(plane.delete_vms, names))
            if not await run(plane.list_vms):
                # The last VM is gone: so go the VPC namespaces (bridge, VXLAN, forwarding entries).
                await run(plane.destroy)
                self._subnets.pop(vhost.name, None)
        reply = agent_pb2.DeleteVmsReply()
        known = self._specs.get(vhost.name, {})
        gone = 0
        for result in results:
            reply.results.add(name=result.name, ok=result.ok, error=result.error, status=common_pb2.DELETING)
            if result.ok:
                reply.deleted += 1
                known.pop(result.name, None)
                gone += result.created  # created=True here means "it existed and is gone"
            else:
                reply.failed += 1
                self._metrics.failures.labels("delete", _reason(result.error)).inc()
        if not known:
            self._specs.pop(vhost.name, None)
        self._metrics.vms.dec(gone)
        if names:
            self._metrics.vm_seconds.labels("delete").observe((time.perf_counter() - started) / len(names))
        log.info(
            "vms_deleted", vhost=vhost.name, requested=len(names), deleted=reply.deleted, failed=reply.failed
        )
        return reply

    def _with_known_subnets(self, vhost: Vhost, vpc: VpcSpec) -> VpcSpec:
        """`vpc` with every subnet the vhost's VNI has been asked to serve so far."""
        known = self._subnets.setdefault(vhost.name, {}).setdefault(vpc.vni, {})
        known.update((s.cidr, s) for s in vpc.subnets)
        return VpcSpec(vpc.vpc_id, vpc.vni, tuple(known.values()), vpc.gateway_mac, routed=vpc.routed)
