"""gRPC servicer of the network service: Merak's NetConfigHandler and the port RPCs over the manager."""

from __future__ import annotations

from typing import Any

import grpc

from merak.errors import InvalidArgument, enum_name
from merak.grpcserver import ServiceRegistration
from merak.logs import get_logger
from merak.skips import Skips
from merak.v1 import common_pb2, network_pb2, network_pb2_grpc
from services.network.manager import NetworkManager
from services.network.models import NetworkState, NetworkView, PortRequest

log = get_logger(__name__)

SERVICE_NAME = "network.MerakNetworkService"
_grpc = network_pb2_grpc


class NetworkServicer(_grpc.MerakNetworkServiceServicer):
    """network.MerakNetworkService."""

    def __init__(self, manager: NetworkManager) -> None:
        self.manager = manager

    async def NetConfigHandler(
        self, request: network_pb2.InternalNetConfigInfo, context: grpc.aio.ServicerContext[Any, Any]
    ) -> network_pb2.ReturnNetworkMessage:
        """CREATE / INFO / DELETE / UPDATE of a network config."""
        op = request.operation_type
        config = request.config
        if op in (common_pb2.CREATE, common_pb2.UPDATE):
            skips = Skips()
            if op == common_pb2.CREATE:
                reply = network_reply(await self.manager.create(config, skips), "CREATE done")
            else:
                reply = network_reply(await self.manager.update(config, skips), "UPDATE done")
            if skips:
                reply.warnings.extend(skips.warnings)
                log.warning(
                    "network_config_skipped", netconfig_id=config.netconfig_id, warnings=skips.warnings
                )
            return reply
        if op == common_pb2.INFO:
            return network_reply(await self.manager.info(config.netconfig_id), "INFO done")
        if op == common_pb2.DELETE:
            state = await self.manager.delete(config.netconfig_id)
            if state is None:
                return network_pb2.ReturnNetworkMessage(
                    return_code=common_pb2.OK,
                    return_message=f"DELETE done: network config {config.netconfig_id!r} did not exist",
                )
            return network_reply(NetworkView(state, {}), "DELETE done")
        raise InvalidArgument(
            "operation_type",
            f"{enum_name(common_pb2.OperationType, op)} is not a network operation; "
            "use CREATE, INFO, DELETE or UPDATE",
        )

    async def FindNetConfig(
        self, request: network_pb2.FindNetConfigRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> network_pb2.FindNetConfigReply:
        """The network config that holds the VPCs named."""
        netconfig_id = await self.manager.find([v.strip() for v in request.vpc_ids])
        return network_pb2.FindNetConfigReply(netconfig_id=netconfig_id)

    async def AllocatePorts(
        self, request: network_pb2.AllocatePortsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> network_pb2.AllocatePortsReply:
        """An address, MAC and gateway per VM port, in request order; idempotent per vm_id. With host
        blocks, each from its host's blocks, with the route its host advertises for it."""
        requests = [
            PortRequest(
                p.vm_id.strip(),
                p.vpc_id.strip(),
                p.subnet_id.strip(),
                tuple(g.strip() for g in p.security_group_ids),
                p.host.strip(),
            )
            for p in request.ports
        ]
        allocations = await self.manager.allocate_ports(request.netconfig_id, requests)
        reply = network_pb2.AllocatePortsReply()
        for a in allocations:
            reply.ports.add(
                vm_id=a.vm_id, vpc_id=a.vpc_id, subnet_id=a.subnet_id, ip=a.ip, prefix_len=a.prefix_len,
                mac=a.mac, gateway=a.gateway, vni=a.vni, gateway_mac=a.gateway_mac, cidr=a.cidr,
                port_name=a.port_name, route=a.route,
            )  # fmt: skip
        return reply

    async def ReleasePorts(
        self, request: network_pb2.ReleasePortsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> network_pb2.ReleasePortsReply:
        """Give VMs' addresses back; unknown vm_ids are ignored."""
        released = await self.manager.release_ports(request.netconfig_id, [v.strip() for v in request.vm_ids])
        return network_pb2.ReleasePortsReply(released=released)

    async def WaitPortsUp(
        self, request: network_pb2.WaitPortsUpRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> network_pb2.WaitPortsUpReply:
        """Per VM, whether its logical switch port came up in OVN within the timeout, and how fast."""
        answers = await self.manager.wait_ports_up(
            request.netconfig_id, [v.strip() for v in request.vm_ids], request.timeout_seconds
        )
        reply = network_pb2.WaitPortsUpReply()
        for answer in answers:
            reply.ports.add(vm_id=answer.vm_id, up=answer.up, seconds=answer.seconds, chassis=answer.chassis)
        return reply


def network_reply(view: NetworkView, done: str) -> network_pb2.ReturnNetworkMessage:
    """Merak's reply shape (vpcs, security_group_ids) plus groups with rules, routers, nodes and plugin."""
    state = view.state
    counts = state.counts()
    reply = network_pb2.ReturnNetworkMessage(
        return_code=common_pb2.OK,
        return_message=(
            f"{done}: network config {state.netconfig_id!r} ({state.plugin}): {counts['vpc']} VPCs, "
            f"{counts['subnet']} subnets, {counts['security_group']} security groups, "
            f"{counts['router']} routers, {counts['node']} nodes"
        ),
        plugin=state.plugin,
        ovn_sb=state.ovn.sb if state.ovn is not None else "",
        block_prefix=max((subnet.block_prefix for _, subnet in state.subnets()), default=0),
    )
    reply.vpcs.extend(_vpc_infos(state, view.allocated))
    for call in view.calls:
        reply.calls.add(operation=call.operation, code=call.code, seconds=call.seconds, at=call.at)
    reply.security_group_ids.extend(g.id for g in state.security_groups)
    for group in state.security_groups:
        info = reply.security_groups.add(
            id=group.id, name=group.name, tenant_id=group.tenant_id, project_id=group.project_id,
            apply_to=group.apply_to,
        )  # fmt: skip
        for rule in group.rules:
            info.rules.add(
                id=rule.id, name=rule.name, description=rule.description, ethertype=rule.ethertype,
                direction=rule.direction, protocol=rule.protocol, port_range=rule.port_range,
                remote_group_id=rule.remote_group_id, remote_ip_prefix=rule.remote_ip_prefix,
            )  # fmt: skip
    for router in state.routers:
        reply.routers.add(id=router.id, name=router.name, subnets=router.subnet_ids)
    for node in state.nodes:
        reply.computes.add(
            id=node.id, name=node.name, datapath_ip=node.datapath_ip, container_ip=node.container_ip,
            mac=node.mac, veth=node.veth, hostname=node.hostname,
        )  # fmt: skip
    return reply


def _vpc_infos(state: NetworkState, allocated: dict[int, int]) -> list[common_pb2.InternalVpcInfo]:
    infos = []
    for vpc in state.vpcs:
        info = common_pb2.InternalVpcInfo(
            vpc_id=vpc.id, tenant_id=vpc.tenant_id, project_id=vpc.project_id, vpc_cidr=vpc.cidr,
            vni=vpc.vni, gateway_mac=vpc.gateway_mac,
        )  # fmt: skip
        for subnet in vpc.subnets:
            info.subnets.add(
                subnet_id=subnet.id, subnet_cidr=subnet.cidr, subnet_gw=subnet.gateway,
                number_vms=subnet.number_vms, allocated=allocated.get(subnet.slot, 0),
                capacity=subnet.capacity,
            )  # fmt: skip
        infos.append(info)
    return infos


def registration(servicer: NetworkServicer) -> ServiceRegistration:
    """How to put the servicer on a server."""
    return ServiceRegistration(
        SERVICE_NAME, lambda server: _grpc.add_MerakNetworkServiceServicer_to_server(servicer, server)
    )
