"""Early checks of configs and scenarios; each error names its field. Deep checks stay with the services.

One rule for placeholders (merak.skips): a config stored through the scenario service's gRPC API is
checked strictly, and an entry Merak would have ignored (a control-plane gateway IP, a router entry or a
security-group rule that is not what it says) is INVALID_ARGUMENT; a config DEPLOYed (stored over REST
unchecked, as Merak stored it) is checked leniently: those entries are warnings, left out by the service
that owns them, which says so in its reply.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence
from typing import Any

from merak import ovs
from merak.errors import InvalidArgument, enum_name
from merak.ids import check_id
from merak.skips import Skips
from merak.v1 import compute_pb2, scenario_pb2, topology_pb2
from services.scenario import faults
from services.scenario.models import (
    COMPUTE_CONFIG,
    NETWORK_CONFIG,
    REFERENCE_FIELDS,
    SCENARIO,
    TEST_CONFIG,
    TOPOLOGY_CONFIG,
    Kind,
    deploy_type,
)
from services.scenario.translate import PLUGINS

BACKENDS = ("local", "kubernetes")
DATAPLANES = ("real", "fake")
# Churn: VMs replaced per second, and for how long.
MAX_CHURN = {"churn_rate": 10_000.0, "churn_seconds": 7 * 86_400.0}
# Merak sends one port per VM, and so does compute.
MAX_PORTS_PER_VM = 1


def validate(kind: Kind[Any], entity: Any, skips: Skips | None = None) -> None:
    """Raise InvalidArgument naming the first bad field of an entity about to be stored; with a lenient
    `skips`, what Merak ignored is collected there instead (strict by default)."""
    skips = Skips(strict=True) if skips is None else skips
    if kind is TOPOLOGY_CONFIG:
        topology_config(entity, skips)
    elif kind is NETWORK_CONFIG:
        network_config(entity, skips)
    elif kind is COMPUTE_CONFIG:
        compute_config(entity, skips)
    elif kind is SCENARIO:
        scenario(entity)
    elif kind is TEST_CONFIG:
        faults.check(entity.fault_schedule)


def _enum_name(enum: Any, value: int) -> str | None:
    try:
        name: str = enum.Name(value)
    except ValueError:
        return None
    return name


def _cidr(field: str, text: str, *, strict: bool) -> ipaddress.IPv4Network:
    example = "e.g. 10.1.0.0/16"
    if "/" not in text:
        raise InvalidArgument(field, f"{text!r} is not a CIDR ({example})")
    try:
        network = ipaddress.ip_network(text.strip(), strict=strict)
    except ValueError as exc:
        raise InvalidArgument(field, f"{text!r} is not a valid CIDR: {exc}") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise InvalidArgument(field, f"{text!r}: only IPv4 is supported")
    return network


def _ipv4(field: str, text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text.strip())
    except ValueError:
        raise InvalidArgument(field, f"{text!r} is not an IPv4 address") from None


def topology_config(config: scenario_pb2.TopologyConfig, skips: Skips) -> None:
    """Counts Merak needs, the data-plane CIDR, the backend and data plane, custom nodes and links."""
    if _enum_name(topology_pb2.TopologyType, config.type) is None:
        known = ", ".join(topology_pb2.TopologyType.keys())
        raise InvalidArgument("type", f"unknown topology type {int(config.type)}; known: {known}")
    if config.backend and config.backend not in BACKENDS:
        raise InvalidArgument("backend", f"unknown backend {config.backend!r}; known: {', '.join(BACKENDS)}")
    if config.dataplane and config.dataplane not in DATAPLANES:
        raise InvalidArgument("dataplane", f"must be 'real' or 'fake', got {config.dataplane!r}")
    for i, ip in enumerate(config.control_plane_gateway_ips):
        try:
            _ipv4(f"control_plane_gateway_ips[{i}]", ip)
        except InvalidArgument as exc:
            skips.skip(exc.field, exc.problem, "ignored (control-plane gateways are not emulated)")
    cidr = _cidr("data_plane_cidr", config.data_plane_cidr, strict=False) if config.data_plane_cidr else None
    if config.type == topology_pb2.CUSTOM:
        _custom_nodes(config)
        return
    if config.number_of_vhosts < 1:
        raise InvalidArgument("number_of_vhosts", "must be at least 1")
    if cidr is None:
        if skips.strict:
            raise InvalidArgument("data_plane_cidr", "required (e.g. 10.200.0.0/16)")
        return  # the topology service gives the lab its default underlay, and says so
    # The network and broadcast addresses are not given to vhosts.
    capacity = max(cidr.num_addresses - 2, 0)
    if capacity < config.number_of_vhosts:
        raise InvalidArgument(
            "data_plane_cidr",
            f"{cidr} holds {capacity} vhost addresses, but number_of_vhosts is {config.number_of_vhosts}",
        )
    if config.type == topology_pb2.TREE:
        if config.vhosts_per_rack < 1:
            raise InvalidArgument("vhosts_per_rack", "must be at least 1 for a TREE topology")
        if config.ports_per_vswitch == 1 or (skips.strict and config.ports_per_vswitch < 2):
            raise InvalidArgument("ports_per_vswitch", "must be at least 2 for a TREE topology")


def _custom_nodes(config: scenario_pb2.TopologyConfig) -> None:
    names: set[str] = set()
    for i, vnode in enumerate(config.vnodes):
        if not vnode.name:
            raise InvalidArgument(f"vnodes[{i}].name", "required")
        if vnode.name in names:
            raise InvalidArgument(f"vnodes[{i}].name", f"duplicate vnode {vnode.name!r}")
        names.add(vnode.name)
        if _enum_name(topology_pb2.VNodeType, vnode.type) is None:
            raise InvalidArgument(f"vnodes[{i}].type", f"unknown vnode type {int(vnode.type)}")
        for k, nic in enumerate(vnode.nics):
            if nic.ip:
                address = nic.ip.partition("/")[0]
                _ipv4(f"vnodes[{i}].nics[{k}].ip", address)
    if not any(v.type == topology_pb2.VHOST for v in config.vnodes):
        raise InvalidArgument("vnodes", "a CUSTOM topology needs at least one VHOST vnode")
    for i, vlink in enumerate(config.vlinks):
        for end in ("src", "dst"):
            name = getattr(vlink, end)
            if name not in names:
                raise InvalidArgument(f"vlinks[{i}].{end}", f"unknown vnode {name!r}")


def network_config(config: scenario_pb2.NetworkConfig, skips: Skips) -> None:
    """At least one VPC; CIDRs well formed, subnets inside their VPC and apart, gateways inside subnets;
    router entries that name a subnet, rules whose direction and prefix mean something."""
    if config.plugin and config.plugin.lower() not in PLUGINS:
        raise InvalidArgument("plugin", f"unknown plugin {config.plugin!r}; known: {', '.join(PLUGINS)}")
    for field in ("ovn_nb", "ovn_sb"):
        remote = getattr(config, field)
        if remote and config.plugin.lower() != "ovn":
            raise InvalidArgument(field, "only with the ovn plugin")
        if remote:
            ovs.check_remote(field, remote)
    if not config.vpcs:
        raise InvalidArgument("vpcs", "at least one VPC is required")
    # Merak's clients leave the VPC's CIDR out; the network service takes the one holding its subnets.
    _vpcs("vpcs", config.vpcs, cidr_required=skips.strict, strict=skips.strict)
    for i, group in enumerate(config.security_groups):
        for k, rule in enumerate(group.rules):
            field = f"security_groups[{i}].rules[{k}]"
            if rule.direction and rule.direction.lower() not in ("ingress", "egress"):
                skips.skip(
                    f"{field}.direction", f"{rule.direction!r} is not ingress or egress", "rule skipped"
                )
            if rule.remote_ip_prefix:
                try:
                    ipaddress.ip_network(rule.remote_ip_prefix.strip(), strict=False)
                except ValueError:
                    skips.skip(
                        f"{field}.remote_ip_prefix",
                        f"{rule.remote_ip_prefix!r} is not a CIDR",
                        "rule skipped",
                    )
    names = {text for vpc in config.vpcs for subnet in vpc.subnet_info for text in _subnet_names(subnet)}
    for r, router in enumerate(config.routers):
        for k, entry in enumerate(router.subnet_gateways):
            if entry.strip() not in names and _normalized(entry) not in names:
                skips.skip(
                    f"routers[{r}].subnet_gateways[{k}]",
                    f"{entry!r} names no subnet of this config (give its id, CIDR or gateway IP)",
                )


def _normalized(text: str) -> str:
    """A CIDR written with host bits as its network (as the network service reads it), else the text."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False)) if "/" in text else text.strip()
    except ValueError:
        return text.strip()


def _subnet_names(subnet: scenario_pb2.SubnetInfo) -> set[str]:
    """What a router entry may name a subnet by: its id, CIDR or gateway (the first host by default)."""
    names = {subnet.subnet_id, subnet.subnet_cidr, _normalized(subnet.subnet_cidr), subnet.subnet_gateway}
    if not subnet.subnet_gateway and "/" in subnet.subnet_cidr:
        with contextlib.suppress(ValueError):
            names.add(str(ipaddress.ip_network(subnet.subnet_cidr.strip(), strict=False).network_address + 1))
    return names - {""}


def _vpcs(field: str, vpcs: Sequence[scenario_pb2.VpcInfo], *, cidr_required: bool, strict: bool) -> None:
    """CIDRs well formed (`strict`: no host bits set), subnets inside their VPC and apart, gateways
    inside their subnets."""
    for i, vpc in enumerate(vpcs):
        where = f"{field}[{i}]"
        if not vpc.vpc_cidr and not cidr_required:
            for j, subnet in enumerate(vpc.subnet_info):
                _cidr(f"{where}.subnet_info[{j}].subnet_cidr", subnet.subnet_cidr, strict=False)
            continue
        if not vpc.vpc_cidr:
            raise InvalidArgument(f"{where}.vpc_cidr", "required (e.g. 10.1.0.0/16)")
        vpc_cidr = _cidr(f"{where}.vpc_cidr", vpc.vpc_cidr, strict=strict)
        subnets: list[ipaddress.IPv4Network] = []
        for j, subnet in enumerate(vpc.subnet_info):
            sfield = f"{where}.subnet_info[{j}]"
            if not subnet.subnet_cidr:
                raise InvalidArgument(f"{sfield}.subnet_cidr", "required")
            network = _cidr(f"{sfield}.subnet_cidr", subnet.subnet_cidr, strict=strict)
            if not network.subnet_of(vpc_cidr):
                raise InvalidArgument(
                    f"{sfield}.subnet_cidr", f"{network} is outside the VPC CIDR {vpc_cidr}"
                )
            for k, other in enumerate(subnets):
                if network.overlaps(other):
                    raise InvalidArgument(
                        f"{sfield}.subnet_cidr", f"{network} overlaps subnet_info[{k}] ({other})"
                    )
            subnets.append(network)
            if subnet.subnet_gateway:
                gateway = _ipv4(f"{sfield}.subnet_gateway", subnet.subnet_gateway)
                if gateway not in network or gateway in (network.network_address, network.broadcast_address):
                    raise InvalidArgument(
                        f"{sfield}.subnet_gateway", f"{gateway} is not a host address of {network}"
                    )


def compute_config(config: scenario_pb2.ComputeConfig, skips: Skips) -> None:
    """Deploy type and scheduler known; the counts Merak needs; RPS rate; ASSIGN's VMs per host."""
    if _enum_name(compute_pb2.VMDeployType, config.vm_deploy_type) is None:
        known = ", ".join(compute_pb2.VMDeployType.keys())
        raise InvalidArgument(
            "vm_deploy_type", f"unknown deploy type {int(config.vm_deploy_type)}; known: {known}"
        )
    if _enum_name(compute_pb2.VMScheduleType, config.scheduler) is None:
        known = ", ".join(compute_pb2.VMScheduleType.keys())
        raise InvalidArgument("scheduler", f"unknown scheduler {int(config.scheduler)}; known: {known}")
    if config.number_of_port_per_vm > MAX_PORTS_PER_VM:
        skips.skip(
            "number_of_port_per_vm",
            f"{config.number_of_port_per_vm} ports per VM asked; at most {MAX_PORTS_PER_VM} is made "
            "(Merak made one too)",
            f"{MAX_PORTS_PER_VM} port per VM",
        )
    if config.rps < 0:
        raise InvalidArgument("rps", f"must not be negative, got {config.rps}")
    for field in ("churn_rate", "churn_seconds"):
        value = getattr(config, field)
        if not 0 <= value <= MAX_CHURN[field]:  # NaN fails too
            raise InvalidArgument(field, f"{value!r}: from 0 to {MAX_CHURN[field]:g}")
    if config.churn_rate and not config.churn_seconds:
        raise InvalidArgument("churn_seconds", "a churn_rate needs churn_seconds (how long the churn lasts)")
    rps = config.rps if config.scheduler == compute_pb2.RPS else 0.0
    if config.churn_seconds and not (config.churn_rate or rps):
        raise InvalidArgument("churn_seconds", "a churn needs a rate: churn_rate, or the RPS scheduler's rps")
    if config.scheduler == compute_pb2.RPS and config.rps <= 0:
        raise InvalidArgument("rps", "the RPS scheduler needs a target rate above 0 (VMs per second)")
    nodes = config.number_of_compute_nodes
    kind = deploy_type(config)
    if kind == compute_pb2.ASSIGN:
        if not any(config.vms_per_host):
            raise InvalidArgument("vms_per_host", "every entry is 0: no VM to create")
        if nodes and len(config.vms_per_host) != nodes:
            raise InvalidArgument(
                "vms_per_host", f"{len(config.vms_per_host)} entries, but number_of_compute_nodes is {nodes}"
            )
    else:
        if config.number_of_vm_per_vpc < 1:
            name = enum_name(compute_pb2.VMDeployType, kind)
            raise InvalidArgument("number_of_vm_per_vpc", f"must be at least 1 for {name}")
        if nodes and config.number_of_vm_per_vpc < nodes:
            raise InvalidArgument(
                "number_of_vm_per_vpc",
                f"{config.number_of_vm_per_vpc} VMs per VPC over {nodes} compute nodes is 0 per node",
            )
    _vpcs("vpc_info", config.vpc_info, cidr_required=False, strict=skips.strict)


def scenario(entity: scenario_pb2.Scenario) -> None:
    """A scenario names its five configs (that they exist is checked where it is stored)."""
    for field, _kind in REFERENCE_FIELDS:
        value = getattr(entity, field)
        if not value:
            raise InvalidArgument(field, "required")
        check_id(field, value)
