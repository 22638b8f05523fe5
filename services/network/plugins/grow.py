"""What a network config holds after CREATE or UPDATE, as plugins that keep their own ids build it: ids for
what is new, existing objects unchanged and in place (no I/O)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

from services.network.models import (
    NetworkSpec,
    NetworkState,
    RouterState,
    RuleState,
    SecurityGroupState,
    SubnetState,
    VpcState,
)


def new_id(given: str) -> str:
    """The id the request gave, or a fresh one."""
    return given or str(uuid.uuid4())


def grow_state(
    spec: NetworkSpec, current: NetworkState | None, plugin: str, new_vpc: Callable[[], tuple[int, str]]
) -> NetworkState:
    """`current` (None on CREATE) grown to hold `spec`; `new_vpc()` gives each new VPC its VNI and
    gateway MAC, in spec order."""
    have_vpcs = current.vpcs if current else ()
    slot = current.next_slot() if current else 0
    vpcs: list[VpcState] = []
    for i, vpc in enumerate(spec.vpcs):
        existing = have_vpcs[i] if i < len(have_vpcs) else None
        subnets = list(existing.subnets) if existing else []
        for subnet in vpc.subnets[len(subnets) :]:
            subnets.append(
                SubnetState(
                    new_id(subnet.id), subnet.cidr, subnet.gateway, subnet.number_vms, slot, spec.block_prefix
                )
            )
            slot += 1
        if existing is not None:
            vpcs.append(replace(existing, subnets=tuple(subnets)))
            continue
        vni, mac = new_vpc()
        vpcs.append(
            VpcState(new_id(vpc.id), vpc.tenant_id, vpc.project_id, vpc.cidr, vni, mac, tuple(subnets))
        )
    have_groups = current.security_groups if current else ()
    group_ids = [g.id for g in have_groups] + [new_id(g.id) for g in spec.security_groups[len(have_groups) :]]
    groups = list(have_groups)
    for k, group in enumerate(spec.security_groups[len(have_groups) :], start=len(have_groups)):
        rules = tuple(
            RuleState(
                id=new_id(rule.id),
                name=rule.name,
                description=rule.description,
                ethertype=rule.ethertype,
                direction=rule.direction,
                protocol=rule.protocol,
                port_range=rule.port_range,
                remote_group_id="" if rule.remote_group is None else group_ids[rule.remote_group],
                remote_ip_prefix=rule.remote_ip_prefix,
            )
            for rule in group.rules
        )
        groups.append(
            SecurityGroupState(
                group_ids[k], group.name, group.tenant_id, group.project_id, rules, group.apply_to
            )
        )
    have_routers = current.routers if current else ()
    routers = list(have_routers)
    for router in spec.routers[len(have_routers) :]:
        vpc_state = vpcs[router.vpc]
        routers.append(
            RouterState(
                new_id(router.id),
                router.name,
                vpc_state.id,
                tuple(vpc_state.subnets[s].id for s in router.subnets),
            )
        )
    return NetworkState(
        netconfig_id=spec.netconfig_id,
        plugin=plugin,
        vpcs=tuple(vpcs),
        security_groups=tuple(groups),
        routers=tuple(routers),
        nodes=spec.nodes,
    )
