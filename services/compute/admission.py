"""What a CREATE or UPDATE must pass before compute writes anything: a plugin and a schedule that make
sense, the network config it names (which fills in its subnets), room in those subnets, and agents
the topology service started. Also what makes two requests the same one (`fingerprint`)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import grpc

from merak.controlplane import ControlPlaneAllow
from merak.errors import InvalidArgument, from_rpc_error
from merak.v1 import common_pb2, compute_pb2, network_pb2, network_pb2_grpc, topology_pb2, topology_pb2_grpc
from services.compute.contracts import RANDOM, RPS, SEQUENTIAL
from services.compute.inventory import Counts, Host
from services.compute.plugins import VmPlugin, plugin_type

SCHEDULES = {compute_pb2.SEQUENTIAL: SEQUENTIAL, compute_pb2.RPS: RPS, compute_pb2.RANDOM_SCHEDULE: RANDOM}


def fingerprint(config: compute_pb2.InternalComputeConfiguration) -> str:
    """What makes two requests the same deployment (hosts, VMs, network), not their request ids or states."""
    copy = compute_pb2.InternalComputeConfiguration()
    copy.CopyFrom(config)
    copy.ClearField("request_id")
    copy.ClearField("revision_number")
    copy.ClearField("format_version")
    copy.ClearField("message_type")
    for pod in copy.pods:
        pod.ClearField("status")
        pod.ClearField("operation_type")
    for vpc in copy.vm_deploy.vpcs:
        for subnet in vpc.subnets:  # filled in from the network service; they change as VMs come
            subnet.ClearField("allocated")
            subnet.ClearField("capacity")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()


def checked_plugin(
    config: compute_pb2.InternalComputeConfiguration, control_plane: ControlPlaneAllow
) -> type[VmPlugin]:
    """The plugin, scheduler, rate and churn of a CREATE or UPDATE must make sense, and the Alcor it
    names must be one the operator allowed (the agents will call it from inside the machine)."""
    plugin = plugin_type(config.plugin)
    if plugin.needs_alcor and not config.alcor_url:
        raise InvalidArgument(
            "config.alcor_url",
            "required with the alcor plugin: Alcor's port manager, e.g. http://10.0.0.5:30006 "
            "(a scenario takes it from its service config: aca-cmd -a <ip>, or the alcorIp entry)",
        )
    if plugin.needs_alcor:
        control_plane.check_url("config.alcor_url", config.alcor_url)
    if config.vm_deploy.scheduler not in SCHEDULES:
        raise InvalidArgument(
            "config.vm_deploy.scheduler", f"unknown scheduler {int(config.vm_deploy.scheduler)}"
        )
    if config.vm_deploy.scheduler == compute_pb2.RPS and config.rps <= 0:
        raise InvalidArgument("config.rps", "the RPS scheduler needs a target rate above 0")
    for field in ("churn_rate", "churn_seconds"):
        value = getattr(config, field)
        if not 0 <= value <= 1e9:  # NaN fails too
            raise InvalidArgument(f"config.{field}", f"{value!r} is not a rate or a duration")
    return plugin


def check_capacity(
    config: compute_pb2.InternalComputeConfiguration, counts: Counts, freed: dict[str, int] | None = None
) -> None:
    """Each subnet has the addresses the VMs to create need (with those `freed` by VMs that go),
    counted per host and subnet: no VM needs to be built to know."""
    wanted: dict[str, int] = defaultdict(int)
    for per_host in counts.values():
        for ref, n in per_host.items():
            wanted[ref.subnet_id] += n
    for v, vpc in enumerate(config.vm_deploy.vpcs):
        for s, subnet in enumerate(vpc.subnets):
            free = subnet.capacity - subnet.allocated + (freed or {}).get(subnet.subnet_id, 0)
            if subnet.capacity and wanted[subnet.subnet_id] > free:
                raise InvalidArgument(
                    f"config.vm_deploy.vpcs[{v}].subnets[{s}]",
                    f"{wanted[subnet.subnet_id]} VMs asked for, but subnet {subnet.subnet_cidr} "
                    f"has {free} free addresses",
                )


class Admission:
    """The checks of a request that ask other services: the network service and the topology service."""

    def __init__(
        self,
        network: network_pb2_grpc.MerakNetworkServiceAsyncStub,
        topology: topology_pb2_grpc.MerakTopologyServiceAsyncStub | None,
    ) -> None:
        self.network = network
        # Which agents the topology service started (None: every endpoint is trusted, for tests
        # that serve compute alone).
        self.topology = topology

    async def check_endpoints(
        self, pods: Sequence[common_pb2.InternalComputeInfo], hosts: Sequence[Host]
    ) -> None:
        """Refuse an agent endpoint the topology service did not issue: compute would connect to it."""
        if self.topology is None:
            return
        topology_ids = {pod.topology_id for pod in pods}
        try:
            if "" in topology_ids:  # Merak's clients name no topology: any of them
                listed = await self.topology.ListTopologies(topology_pb2.ListTopologiesRequest(), timeout=30)
                topology_ids = {t.topology_id for t in listed.topologies}
            issued: set[str] = set()
            for topology_id in sorted(topology_ids):
                request = topology_pb2.InternalTopologyInfo(
                    operation_type=common_pb2.INFO,
                    config=topology_pb2.InternalTopologyConfiguration(topology_id=topology_id),
                )
                try:
                    reply = await self.topology.TopologyHandler(request, timeout=60)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.NOT_FOUND:  # deleted since: it issued none
                        continue
                    raise
                issued.update(node.agent_endpoint for node in reply.compute_nodes if node.agent_endpoint)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "topology service") from exc
        for i, host in enumerate(hosts):
            if host.agent_endpoint not in issued:
                raise InvalidArgument(
                    f"config.pods[{i}].agent_endpoint",
                    f"{host.agent_endpoint[:200]!r} is not an agent the topology service started",
                )

    async def complete_from_network(self, config: compute_pb2.InternalComputeConfiguration) -> int:
        """Check the VPCs and subnets against the network config; fill in CIDRs and gateways. Returns
        the network config's per-host block prefix (0: none): its VMs' overlay is routed by block."""
        if not config.netconfig_id:
            config.netconfig_id = await self._netconfig_of(config)
        request = network_pb2.InternalNetConfigInfo(
            operation_type=common_pb2.INFO,
            config=network_pb2.InternalNetConfigConfiguration(netconfig_id=config.netconfig_id),
        )
        try:
            network = await self.network.NetConfigHandler(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:  # deliberate: the id is the caller's field
                raise InvalidArgument(
                    "config.netconfig_id", f"no network config {config.netconfig_id!r}"
                ) from None
            raise from_rpc_error(exc, "network service") from exc
        known = {vpc.vpc_id: {s.subnet_id: s for s in vpc.subnets} for vpc in network.vpcs}
        for v, vpc in enumerate(config.vm_deploy.vpcs):
            if vpc.vpc_id not in known:
                raise InvalidArgument(
                    f"config.vm_deploy.vpcs[{v}].vpc_id",
                    f"unknown VPC {vpc.vpc_id!r} in network config {config.netconfig_id!r}",
                )
            for s, subnet in enumerate(vpc.subnets):
                found = known[vpc.vpc_id].get(subnet.subnet_id)
                if found is None:
                    raise InvalidArgument(
                        f"config.vm_deploy.vpcs[{v}].subnets[{s}].subnet_id",
                        f"unknown subnet {subnet.subnet_id!r}",
                    )
                subnet.subnet_cidr, subnet.subnet_gw = found.subnet_cidr, found.subnet_gw
                subnet.capacity, subnet.allocated = found.capacity, found.allocated
        return network.block_prefix

    async def _netconfig_of(self, config: compute_pb2.InternalComputeConfiguration) -> str:
        """Merak's compute request names VPCs, not a network config: the one that holds them."""
        vpc_ids = [vpc.vpc_id for vpc in config.vm_deploy.vpcs]
        if not any(vpc_ids):
            raise InvalidArgument(
                "config.netconfig_id", "required with the native plugin when no VPC id is given"
            )
        try:
            reply = await self.network.FindNetConfig(
                network_pb2.FindNetConfigRequest(vpc_ids=vpc_ids), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                # Deliberate: the VPC ids asked about are the caller's config.vm_deploy.vpcs.
                raise InvalidArgument("config.vm_deploy.vpcs", exc.details() or exc.code().name) from None
            raise from_rpc_error(exc, "network service") from exc
        return reply.netconfig_id
