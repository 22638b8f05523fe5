"""Scenario configs → the requests of topology, network and compute; reply summaries. Pure, no I/O."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from merak.errors import InvalidArgument
from merak.skips import Skips
from merak.v1 import common_pb2, compute_pb2, network_pb2, scenario_pb2, topology_pb2
from services.scenario.models import Action, deploy_type

# Merak's message header: format 1, revision 1, a fresh request id, a FULL message.
FORMAT_VERSION = 1
REVISION = 1

# Which services of a service config go where (Merak's where_to_run).
TOPOLOGY_SERVICES = ("AGENT",)
NETWORK_SERVICES = ("NETWORK",)
COMPUTE_SERVICES = ("COMPUTE", "AGENT")


# Merak's names for the Alcor endpoints in a service config, and Alcor's port-manager NodePort.
ALCOR_SERVICE_CMD = "alcorIp"
ACA_SERVICE_NAME = "aca-cmd"
ALCOR_PORT_MANAGER_PORT = 30006


def alcor_port_manager(config: scenario_pb2.ServiceConfig | None) -> str:
    """Alcor's port manager for the agents, as Merak found it: the `-a <ip>` parameter of the `aca-cmd`
    service, else the `alcorIp` service's host, on port 30006; an `alcorIp` URL that names a port (one
    gateway for every Alcor service) is used as it is. "" when the service config names no Alcor."""
    if config is None:
        return ""
    for service in config.services:
        if service.name != ACA_SERVICE_NAME:
            continue
        tokens = " ".join(service.parameters).split()
        for i, token in enumerate(tokens[:-1]):
            if token == "-a":
                return f"http://{tokens[i + 1]}:{ALCOR_PORT_MANAGER_PORT}"
    for i, service in enumerate(config.services):
        if service.cmd != ALCOR_SERVICE_CMD or not service.url.strip():
            continue
        text = service.url.strip()
        parts = urlsplit(text if "://" in text else f"http://{text}")
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"service_config.services[{i}].url", f"{text!r} is not an Alcor host")
        if port is not None:
            return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        return f"{parts.scheme}://{parts.hostname}:{ALCOR_PORT_MANAGER_PORT}"
    return ""


def _no_control_plane(config: scenario_pb2.ServiceConfig | None) -> str:
    return ""


@dataclass(frozen=True, slots=True)
class NetworkPlugin:
    """A network plugin as compute's request carries it: its name, and where the agents reach its control
    plane (from the service config; "" when the plugin has none)."""

    name: str
    control_plane: Callable[[scenario_pb2.ServiceConfig | None], str] = _no_control_plane


NATIVE = NetworkPlugin("native")
ALCOR = NetworkPlugin("alcor", alcor_port_manager)
# OVN's northbound and southbound databases travel in the network config (ovn_nb/ovn_sb; empty: the
# stack's own central); compute asks the network service for them.
OVN = NetworkPlugin("ovn")
PLUGINS: dict[str, NetworkPlugin] = {p.name: p for p in (NATIVE, ALCOR, OVN)}


def network_plugin(name: str) -> NetworkPlugin:
    """The plugin named (`native` when none is); a name this service does not know is passed on as it is."""
    if not name:
        return NATIVE
    return PLUGINS.get(name) or NetworkPlugin(name)


def operation(action: Action) -> common_pb2.OperationType.ValueType:
    """The services' operation for a scenario's DEPLOY (CREATE) or UPDATE."""
    return common_pb2.UPDATE if action == scenario_pb2.UPDATE else common_pb2.CREATE


def request_id() -> str:
    """A fresh request id (uuid4 hex, as Merak)."""
    return uuid.uuid4().hex


def services(
    config: scenario_pb2.ServiceConfig | None,
    where: Sequence[str],
    operation: common_pb2.OperationType.ValueType,
) -> list[common_pb2.InternalServiceInfo]:
    """The services of a service config whose where_to_run is one of `where`."""
    if config is None:
        return []
    return [
        common_pb2.InternalServiceInfo(
            operation_type=operation,
            id=s.id,
            name=s.name,
            cmd=s.cmd,
            url=s.url,
            parameters=s.parameters,
            return_code=s.return_code,
            return_string=s.return_string,
            when_to_run=s.when_to_run,
            where_to_run=s.where_to_run,
        )
        for s in config.services
        if s.where_to_run.strip().upper() in where
    ]


def topology(
    config: scenario_pb2.TopologyConfig,
    service_config: scenario_pb2.ServiceConfig | None,
    operation: common_pb2.OperationType.ValueType,
) -> topology_pb2.InternalTopologyInfo:
    """Merak's InternalTopologyInfo for CREATE/UPDATE; vlinks included (Merak forgot them)."""
    message = topology_pb2.InternalTopologyConfiguration(
        format_version=FORMAT_VERSION,
        revision_number=REVISION,
        request_id=request_id(),
        message_type=common_pb2.FULL,
        topology_id=config.id,
        name=config.name,
        topology_type=config.type,
        number_of_vhosts=config.number_of_vhosts,
        number_of_racks=config.number_of_racks,
        vhost_per_rack=config.vhosts_per_rack,
        ports_per_vswitch=config.ports_per_vswitch,
        data_plane_cidr=config.data_plane_cidr,
        number_of_gateways=config.number_of_control_plane_gateways,
        gateway_ips=config.control_plane_gateway_ips,
        backend=config.backend,
        dataplane=config.dataplane,
    )
    for image in config.images:
        message.images.add(
            operation_type=operation,
            id=image.id,
            name=image.name,
            registry=image.registry,
            cmd=image.cmd,
            args=image.args,
        )
    for vnode in config.vnodes:
        added = message.vnodes.add(operation_type=operation, name=vnode.name, type=vnode.type)
        for nic in vnode.nics:
            added.vnics.add(operation_type=operation, name=nic.name, ip=nic.ip)
    for vlink in config.vlinks:
        message.vlinks.add(operation_type=operation, name=vlink.name, src=vlink.src, dst=vlink.dst)
    message.services.extend(services(service_config, TOPOLOGY_SERVICES, operation))
    return topology_pb2.InternalTopologyInfo(operation_type=operation, config=message)


def topology_ref(
    topology_id: str, operation: common_pb2.OperationType.ValueType
) -> topology_pb2.InternalTopologyInfo:
    """INFO or DELETE of a topology: only its id matters."""
    return topology_pb2.InternalTopologyInfo(
        operation_type=operation,
        config=topology_pb2.InternalTopologyConfiguration(
            format_version=FORMAT_VERSION, request_id=request_id(), topology_id=topology_id
        ),
    )


def network(
    config: scenario_pb2.NetworkConfig,
    service_config: scenario_pb2.ServiceConfig | None,
    computes: Iterable[common_pb2.InternalComputeInfo],
    operation: common_pb2.OperationType.ValueType,
) -> network_pb2.InternalNetConfigInfo:
    """Merak's InternalNetConfigInfo; SG tenant/project and rule direction included (Merak dropped them)."""
    info = network_pb2.InternalNetworkInfo(
        operation_type=operation,
        id=config.id,
        name=config.name,
        number_of_vpcs=config.number_of_vpcs,
        number_of_subnet_per_vpc=config.number_of_subnet_per_vpc,
        number_of_security_groups=config.number_of_security_groups,
    )
    for vpc in config.vpcs:
        added = info.vpcs.add(
            vpc_id=vpc.vpc_id, tenant_id=vpc.tenant_id, project_id=vpc.project_id, vpc_cidr=vpc.vpc_cidr
        )
        for subnet in vpc.subnet_info:
            added.subnets.add(
                subnet_id=subnet.subnet_id,
                subnet_cidr=subnet.subnet_cidr,
                subnet_gw=subnet.subnet_gateway,
                number_vms=subnet.number_of_vms,
            )
    for router in config.routers:
        info.routers.add(
            operation_type=operation, id=router.id, name=router.name, subnets=router.subnet_gateways
        )
    for gateway in config.gateways:
        info.gateways.add(operation_type=operation, id=gateway.id, name=gateway.name, ips=gateway.ips)
    for group in config.security_groups:
        added_group = info.security_groups.add(
            operation_type=operation,
            id=group.id,
            name=group.name,
            tenant_id=group.tenant_id,
            project_id=group.project_id,
            apply_to=group.apply_to,
        )
        for rule in group.rules:
            added_group.rules.add(
                operation_type=operation,
                id=rule.id,
                name=rule.name,
                description=rule.description,
                ethertype=rule.ethertype,
                direction=rule.direction,
                protocol=rule.protocol,
                port_range=rule.port_range,
                remote_group_id=rule.remote_group_id,
                remote_ip_prefix=rule.remote_ip_prefix,
            )
    message = network_pb2.InternalNetConfigConfiguration(
        format_version=FORMAT_VERSION,
        revision_number=REVISION,
        request_id=request_id(),
        netconfig_id=config.id,
        message_type=common_pb2.FULL,
        network=info,
        plugin=config.plugin.lower(),
        ovn_nb=config.ovn_nb,
        ovn_sb=config.ovn_sb,
        block_prefix=config.block_prefix,
    )
    message.services.extend(services(service_config, NETWORK_SERVICES, operation))
    message.computes.extend(computes)
    return network_pb2.InternalNetConfigInfo(operation_type=operation, config=message)


def network_ref(
    netconfig_id: str, operation: common_pb2.OperationType.ValueType
) -> network_pb2.InternalNetConfigInfo:
    """INFO or DELETE of a network config: only its id matters."""
    return network_pb2.InternalNetConfigInfo(
        operation_type=operation,
        config=network_pb2.InternalNetConfigConfiguration(
            format_version=FORMAT_VERSION, request_id=request_id(), netconfig_id=netconfig_id
        ),
    )


def compute(
    config: scenario_pb2.ComputeConfig,
    *,
    service_config: scenario_pb2.ServiceConfig | None,
    scenario_id: str,
    network_config: scenario_pb2.NetworkConfig,
    nodes: Sequence[common_pb2.InternalComputeInfo],
    deployed_network: network_pb2.ReturnNetworkMessage,
    skips: Skips | None = None,
) -> compute_pb2.InternalComputeConfigInfo:
    """Merak's InternalComputeConfigInfo: the topology's vhosts as pods, the network's VPC and subnet ids.

    More compute nodes than vhosts (Merak's Postman collections ask for 50 on a topology of 20) is what
    Merak did with it: every vhost is a pod, and each gets number_of_vm_per_vpc / number_of_compute_nodes
    VMs per VPC; said in `skips`.
    """
    skips = Skips() if skips is None else skips
    wanted = config.number_of_compute_nodes or len(nodes)
    if wanted > len(nodes):
        problem = f"{wanted} compute nodes asked for, but the topology has {len(nodes)} vhosts"
        if deploy_type(config) == compute_pb2.ASSIGN:
            raise InvalidArgument("number_of_compute_nodes", problem)
        skips.skip(
            "number_of_compute_nodes",
            problem,
            f"VMs go on all {len(nodes)}, number_of_vm_per_vpc / {wanted} on each (as Merak)",
        )
    pods = list(nodes[:wanted])
    # The plugin the network was deployed with; the config's when the network service does not say.
    plugin = network_plugin(deployed_network.plugin or network_config.plugin.lower())
    message = compute_pb2.InternalComputeConfiguration(
        format_version=FORMAT_VERSION,
        revision_number=REVISION,
        request_id=request_id(),
        compute_config_id=config.id,
        message_type=common_pb2.FULL,
        netconfig_id=network_config.id,
        plugin=plugin.name,
        alcor_url=plugin.control_plane(service_config),
        alcor_own_overlay=network_config.alcor_own_overlay,
        seed=config.seed,
        rps=config.rps,
        scenario_id=scenario_id,
        # Churn at its own rate, or at Merak's RPS knob when only its duration is given.
        churn_rate=config.churn_rate
        or (config.rps if config.churn_seconds and config.scheduler == compute_pb2.RPS else 0.0),
        churn_seconds=config.churn_seconds,
    )
    message.pods.extend(pods)
    deploy = message.vm_deploy
    deploy.operation_type = common_pb2.CREATE
    kind = deploy_type(config)
    deploy.deploy_type = kind
    deploy.scheduler = config.scheduler
    deploy.secgroups.extend(deployed_network.security_group_ids)
    if not deployed_network.vpcs:
        raise InvalidArgument(
            "network_config_id", f"network config {network_config.id!r} has no VPC to put VMs in"
        )
    for i, vpc in enumerate(deployed_network.vpcs):
        if not vpc.subnets:
            raise InvalidArgument(
                f"network_config.vpcs[{i}].subnet_info", f"VPC {vpc.vpc_id!r} has no subnet to put VMs in"
            )
        per_subnet = 0
        if kind != compute_pb2.ASSIGN:
            # Merak: VMs per VPC, spread over the compute nodes and the VPC's subnets (integer division).
            per_subnet = config.number_of_vm_per_vpc // wanted // len(vpc.subnets)
            if per_subnet == 0:
                raise InvalidArgument(
                    "number_of_vm_per_vpc",
                    f"{config.number_of_vm_per_vpc} VMs per VPC over {wanted} compute nodes and "
                    f"{len(vpc.subnets)} subnets of VPC {vpc.vpc_id!r} is 0 VMs per subnet and node",
                )
        added = deploy.vpcs.add(
            vpc_id=vpc.vpc_id, tenant_id=vpc.tenant_id, project_id=vpc.project_id, vpc_cidr=vpc.vpc_cidr
        )
        for subnet in vpc.subnets:
            added.subnets.add(
                subnet_id=subnet.subnet_id,
                subnet_cidr=subnet.subnet_cidr,
                subnet_gw=subnet.subnet_gw,
                number_vms=per_subnet,
            )
    if kind == compute_pb2.ASSIGN:
        if len(config.vms_per_host) != len(pods):
            raise InvalidArgument(
                "vms_per_host",
                f"{len(config.vms_per_host)} entries for {len(pods)} compute nodes; give one per compute "
                "node, in the topology's vhost order",
            )
        for pod, count in zip(pods, config.vms_per_host, strict=True):
            # Merak names the host by pod_ip; compute also takes the vhost name there.
            deploy.deploy_method.add(operation_type=common_pb2.CREATE, pod_ip=pod.name, num_of_vm=count)
    message.services.extend(services(service_config, COMPUTE_SERVICES, common_pb2.CREATE))
    return compute_pb2.InternalComputeConfigInfo(operation_type=common_pb2.CREATE, config=message)


def compute_ref(
    compute_config_id: str, scenario_id: str, operation: common_pb2.OperationType.ValueType
) -> compute_pb2.InternalComputeConfigInfo:
    """INFO or DELETE of a compute config: only its id (and scenario) matter."""
    return compute_pb2.InternalComputeConfigInfo(
        operation_type=operation,
        config=compute_pb2.InternalComputeConfiguration(
            format_version=FORMAT_VERSION,
            request_id=request_id(),
            compute_config_id=compute_config_id,
            scenario_id=scenario_id,
        ),
    )


def counts(statuses: Iterable[common_pb2.Status.ValueType]) -> scenario_pb2.StatusCounts:
    """Compute nodes (or VMs) per status."""
    result = scenario_pb2.StatusCounts()
    names = {
        common_pb2.NONE: "none",
        common_pb2.DEPLOYING: "deploying",
        common_pb2.READY: "ready",
        common_pb2.DELETING: "deleting",
        common_pb2.UPDATING: "updating",
        common_pb2.ERROR: "error",
        common_pb2.DONE: "done",
    }
    for status in statuses:
        name = names.get(status, "none")
        setattr(result, name, getattr(result, name) + 1)
        result.total += 1
    return result


def progress_counts(progress: compute_pb2.ComputeProgress) -> scenario_pb2.StatusCounts:
    """VMs per status from compute's progress."""
    return scenario_pb2.StatusCounts(
        none=progress.none,
        deploying=progress.deploying,
        ready=progress.ready,
        deleting=progress.deleting,
        updating=progress.updating,
        error=progress.error,
        done=progress.done,
        total=progress.total,
    )


def summary(action: str, title: str, counts: scenario_pb2.StatusCounts) -> str:
    """Merak's summary string, which teste2e parses: "DEPLOY on Topology got - DONE: 0, READY: 5, ..."."""
    others = counts.none + counts.updating
    return (
        f"{action} on {title} got - DONE: {counts.done}, READY: {counts.ready}, "
        f"DEPLOYING: {counts.deploying}, DELETING: {counts.deleting}, ERROR: {counts.error}, Others: {others}"
    )


def network_summary(action: str) -> str:
    """Merak's network summary: "DEPLOY on Network done"."""
    return f"{action} on Network done"
