"""The native plugin: our own small control plane (ids, a VNI per VPC, IPAM in this service)."""

from __future__ import annotations

import uuid
from dataclasses import replace

from merak.errors import ResourceExhausted
from merak.naming import gateway_mac
from services.network.metrics import NetworkMetrics
from services.network.models import (
    NetworkSpec,
    NetworkState,
    RouterState,
    RuleState,
    SecurityGroupState,
    SubnetState,
    VpcState,
)
from services.network.plugins import DeleteProgress, NetworkPlugin
from services.network.store import NetworkStore


def _new_id(given: str) -> str:
    return given or str(uuid.uuid4())


class NativePlugin(NetworkPlugin):
    """VPCs get a VNI from the service-wide pool and the anycast gateway MAC the agents derive from it."""

    name = "native"
    allocates_ports = True

    def __init__(self, store: NetworkStore, metrics: NetworkMetrics, *, vni_min: int, vni_max: int) -> None:
        super().__init__(metrics)
        self.store = store
        self.vni_min = vni_min
        self.vni_max = vni_max

    async def apply(self, spec: NetworkSpec, current: NetworkState | None) -> NetworkState:
        """Ids for what is new, VNIs for new VPCs; existing objects stay as they are."""
        with self.timed("apply"):
            return await self._apply(spec, current)

    async def _apply(self, spec: NetworkSpec, current: NetworkState | None) -> NetworkState:
        have_vpcs = current.vpcs if current else ()
        vnis = await self.store.allocate_vnis(
            len(spec.vpcs) - len(have_vpcs), spec.netconfig_id, self.vni_min, self.vni_max
        )
        if vnis is None:
            raise ResourceExhausted(
                f"no free VNI for {len(spec.vpcs) - len(have_vpcs)} more VPCs "
                f"(the pool {self.vni_min}-{self.vni_max} is shared by every network config)"
            )
        new_vnis = iter(vnis)
        slot = current.next_slot() if current else 0
        vpcs: list[VpcState] = []
        for i, vpc in enumerate(spec.vpcs):
            existing = have_vpcs[i] if i < len(have_vpcs) else None
            subnets = list(existing.subnets) if existing else []
            for subnet in vpc.subnets[len(subnets) :]:
                subnets.append(
                    SubnetState(_new_id(subnet.id), subnet.cidr, subnet.gateway, subnet.number_vms, slot)
                )
                slot += 1
            if existing is not None:
                vpcs.append(replace(existing, subnets=tuple(subnets)))
                continue
            vni = next(new_vnis)
            vpcs.append(
                VpcState(
                    _new_id(vpc.id), vpc.tenant_id, vpc.project_id, vpc.cidr, vni, gateway_mac(vni),
                    tuple(subnets),
                )
            )  # fmt: skip
        have_groups = current.security_groups if current else ()
        group_ids = [g.id for g in have_groups] + [
            _new_id(g.id) for g in spec.security_groups[len(have_groups) :]
        ]
        groups = list(have_groups)
        for k, group in enumerate(spec.security_groups[len(have_groups) :], start=len(have_groups)):
            rules = tuple(
                RuleState(
                    id=_new_id(rule.id),
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
                    _new_id(router.id),
                    router.name,
                    vpc_state.id,
                    tuple(vpc_state.subnets[s].id for s in router.subnets),
                )
            )
        return NetworkState(
            netconfig_id=spec.netconfig_id,
            plugin=self.name,
            vpcs=tuple(vpcs),
            security_groups=tuple(groups),
            routers=tuple(routers),
            nodes=spec.nodes,
        )

    async def remove(
        self,
        state: NetworkState,
        keep: NetworkState | None = None,
        progress: DeleteProgress | None = None,
        *,
        best_effort: bool = False,
    ) -> None:
        """Give the VNIs of the VPCs beyond `keep` back to the pool (only those this config holds)."""
        kept = len(keep.vpcs) if keep else 0
        with self.timed("remove"):
            await self.store.release_vnis(state.netconfig_id, [vpc.vni for vpc in state.vpcs[kept:]])
