"""The alcor plugin: makes and removes a network config's nodes, VPCs, subnets, groups, routers in Alcor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from merak.controlplane import ControlPlaneAllow
from merak.errors import FailedPrecondition, InvalidArgument, MerakError
from merak.logs import get_logger
from services.network.metrics import NetworkMetrics
from services.network.models import (
    AlcorEndpoints,
    NetworkSpec,
    NetworkState,
    Node,
    RouterState,
    RuleState,
    SecurityGroupState,
    SubnetState,
    VpcState,
)
from services.network.plugins import DeleteProgress, NetworkPlugin
from services.network.plugins.alcor.client import AlcorClient, AlcorPorts, alcor_endpoints, path
from services.network.plugins.alcor.messages import (
    group_body,
    host_info,
    id_from,
    router_body,
    rule_body,
    segmentation_id,
    subnet_body,
    vpc_body,
)
from services.network.spec import ALCOR_PLUGIN

log = get_logger(__name__)

# Alcor refuses other subnet prefixes (500, `verifyCidrBlock`).
ALCOR_MIN_PREFIX = 16
ALCOR_MAX_PREFIX = 28


@dataclass
class _Vpc:
    state: VpcState
    subnets: list[SubnetState] = field(default_factory=list)


@dataclass
class _Group:
    state: SecurityGroupState
    rules: list[RuleState] = field(default_factory=list)


@dataclass
class _Router:
    state: RouterState
    subnet_ids: list[str] = field(default_factory=list)


@dataclass
class _Built:
    """What exists in Alcor so far during an apply: the current state plus this call's work."""

    netconfig_id: str
    endpoints: AlcorEndpoints
    nodes: list[Node] = field(default_factory=list)
    vpcs: list[_Vpc] = field(default_factory=list)
    groups: list[_Group] = field(default_factory=list)
    routers: list[_Router] = field(default_factory=list)

    @classmethod
    def of(cls, netconfig_id: str, endpoints: AlcorEndpoints, current: NetworkState | None) -> _Built:
        built = cls(netconfig_id, endpoints)
        if current is not None:
            built.nodes = list(current.nodes)
            built.vpcs = [_Vpc(v, list(v.subnets)) for v in current.vpcs]
            built.groups = [_Group(g, list(g.rules)) for g in current.security_groups]
            built.routers = [_Router(r, list(r.subnet_ids)) for r in current.routers]
        return built

    def state(self) -> NetworkState:
        return NetworkState(
            netconfig_id=self.netconfig_id,
            plugin=AlcorPlugin.name,
            vpcs=tuple(replace(v.state, subnets=tuple(v.subnets)) for v in self.vpcs),
            security_groups=tuple(replace(g.state, rules=tuple(g.rules)) for g in self.groups),
            routers=tuple(replace(r.state, subnet_ids=tuple(r.subnet_ids)) for r in self.routers),
            nodes=tuple(self.nodes),
            alcor=self.endpoints,
        )


# One step of a removal: its progress key, and the call that does it.
_Step = tuple[str, Callable[[], Awaitable[None]]]


class AlcorPlugin(NetworkPlugin):
    """Merak's calls to Alcor, fixed: endpoints per config, rules sent, real router tenant, errors raised."""

    name = ALCOR_PLUGIN
    allocates_ports = False

    def __init__(
        self,
        metrics: NetworkMetrics,
        *,
        ports: AlcorPorts | None = None,
        timeout: float = 20.0,
        aca_port: int = 50001,
        transport: httpx.AsyncBaseTransport | None = None,
        control_plane: ControlPlaneAllow | None = None,
    ) -> None:
        super().__init__(metrics)
        self.ports = ports or AlcorPorts()
        self.timeout = timeout
        self.aca_port = aca_port
        self.transport = transport
        # The Alcors a config may name (MERAK_CONTROL_PLANE_ALLOW; none by default).
        self.control_plane = control_plane or ControlPlaneAllow()

    def check(self, spec: NetworkSpec) -> None:
        """An Alcor the operator allowed (each service's host and port), and what Alcor would refuse
        part-way (500s), refused before any call."""
        at = alcor_endpoints(spec.alcor_url, self.ports)
        for url in dict.fromkeys((at.vpc, at.subnet, at.router, at.node, at.sg)):
            self.control_plane.check_url(spec.alcor_url_field, url)
        for i, vpc in enumerate(spec.vpcs):
            field_ = f"config.network.vpcs[{i}]"
            if not vpc.project_id:
                raise InvalidArgument(
                    f"{field_}.project_id",
                    "required by the alcor plugin (Alcor's paths are /project/<id>/...)",
                )
            for j, subnet in enumerate(vpc.subnets):
                prefix = int(subnet.cidr.partition("/")[2])
                if not ALCOR_MIN_PREFIX <= prefix <= ALCOR_MAX_PREFIX:
                    raise InvalidArgument(
                        f"{field_}.subnets[{j}].subnet_cidr",
                        f"{subnet.cidr}: Alcor takes subnets from /{ALCOR_MIN_PREFIX} to /{ALCOR_MAX_PREFIX}",
                    )
        for k, group in enumerate(spec.security_groups):
            if group.name == "default":
                raise InvalidArgument(
                    f"config.network.security_groups[{k}].name",
                    "'default' is the name Alcor gives each tenant's own default group",
                )

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[AlcorClient]:
        async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as http:
            yield AlcorClient(http, self.metrics, self.name)

    # --- apply ---------------------------------------------------------------------------------

    async def apply(self, spec: NetworkSpec, current: NetworkState | None) -> NetworkState:
        """Register new nodes, then VPCs, subnets, groups with their rules, routers and interfaces."""
        endpoints = (
            current.alcor if current and current.alcor else alcor_endpoints(spec.alcor_url, self.ports)
        )
        built = _Built.of(spec.netconfig_id, endpoints, current)
        async with self._client() as client:
            try:
                await self._apply(client, spec, built)
            except BaseException as exc:
                log.warning(
                    "alcor_apply_failed_undoing", netconfig_id=spec.netconfig_id, error=_describe(exc)
                )
                await self._remove(client, built.state(), current, DeleteProgress(), best_effort=True)
                raise
        return built.state()

    async def _apply(self, client: AlcorClient, spec: NetworkSpec, built: _Built) -> None:
        new_nodes = spec.nodes[len(built.nodes) :]
        # Alcor answers 500 to an empty list, so no call without nodes.
        if new_nodes:
            body = {"host_infos": [host_info(node, self.aca_port) for node in new_nodes]}
            await client.call("register_nodes", "POST", f"{built.endpoints.node}/nodes/bulk", body)
            built.nodes.extend(new_nodes)
        for i, vpc in enumerate(spec.vpcs):
            if i == len(built.vpcs):
                await self._create_vpc(client, spec, i, built)
            for j in range(len(built.vpcs[i].subnets), len(vpc.subnets)):
                await self._create_subnet(client, spec, i, j, built)
        first_new_group = len(built.groups)
        for k in range(first_new_group, len(spec.security_groups)):
            await self._create_group(client, spec, k, built)
        # Alcor ignores rules sent inside a group (it makes two egress rules of its own), so each rule
        # goes to /security-group-rules, once every group exists since a rule may name any of them.
        for k in range(first_new_group, len(spec.security_groups)):
            for r in range(len(spec.security_groups[k].rules)):
                await self._create_rule(client, spec, k, r, built)
        for r in range(len(built.routers), len(spec.routers)):
            await self._create_router(client, spec, r, built)

    async def _create_vpc(self, client: AlcorClient, spec: NetworkSpec, i: int, built: _Built) -> None:
        vpc = spec.vpcs[i]
        url = f"{built.endpoints.vpc}{path('project', vpc.project_id, 'vpcs')}"
        reply = await client.call("create_vpc", "POST", url, vpc_body(spec.netconfig_id, i, vpc))
        vpc_id = id_from(reply, "network", f"vpcs[{i}]")
        state = VpcState(vpc_id, vpc.tenant_id, vpc.project_id, vpc.cidr, segmentation_id(reply), "")
        built.vpcs.append(_Vpc(state))

    async def _create_subnet(
        self, client: AlcorClient, spec: NetworkSpec, i: int, j: int, built: _Built
    ) -> None:
        vpc, entry = spec.vpcs[i], built.vpcs[i]
        subnet = vpc.subnets[j]
        url = f"{built.endpoints.subnet}{path('project', vpc.project_id, 'subnets')}"
        body = subnet_body(spec.netconfig_id, i, j, vpc, entry.state.id)
        reply = await client.call("create_subnet", "POST", url, body)
        subnet_id = id_from(reply, "subnet", f"vpcs[{i}].subnets[{j}]")
        slot = 1 + max((s.slot for v in built.vpcs for s in v.subnets), default=-1)
        entry.subnets.append(SubnetState(subnet_id, subnet.cidr, subnet.gateway, subnet.number_vms, slot))

    async def _create_group(self, client: AlcorClient, spec: NetworkSpec, k: int, built: _Built) -> None:
        group = spec.security_groups[k]
        url = f"{built.endpoints.sg}{path('project', group.project_id, 'security-groups')}"
        body = group_body(spec.netconfig_id, k, group)
        reply = await client.call("create_security_group", "POST", url, body)
        group_id = id_from(reply, "security_group", f"security_groups[{k}]")
        state = SecurityGroupState(
            group_id, group.name, group.tenant_id, group.project_id, (), group.apply_to
        )
        built.groups.append(_Group(state))

    async def _create_rule(
        self, client: AlcorClient, spec: NetworkSpec, k: int, r: int, built: _Built
    ) -> None:
        group = spec.security_groups[k]
        rule = group.rules[r]
        entry = built.groups[k]
        remote = "" if rule.remote_group is None else built.groups[rule.remote_group].state.id
        url = f"{built.endpoints.sg}{path('project', group.project_id, 'security-group-rules')}"
        body = rule_body(group, rule, entry.state.id, remote)
        reply = await client.call("create_security_group_rule", "POST", url, body)
        entry.rules.append(
            RuleState(
                id=id_from(reply, "security_group_rule", f"security_groups[{k}].rules[{r}]"),
                name=rule.name,
                description=rule.description,
                ethertype=rule.ethertype,
                direction=rule.direction,
                protocol=rule.protocol,
                port_range=rule.port_range,
                remote_group_id=remote,
                remote_ip_prefix=rule.remote_ip_prefix,
            )
        )

    async def _create_router(self, client: AlcorClient, spec: NetworkSpec, r: int, built: _Built) -> None:
        router = spec.routers[r]
        vpc_entry = built.vpcs[router.vpc]
        vpc = vpc_entry.state
        base = f"{built.endpoints.router}{path('project', vpc.project_id, 'routers')}"
        body = router_body(spec.netconfig_id, r, router, vpc)
        reply = await client.call("create_router", "POST", base, body)
        router_id = id_from(reply, "router", f"routers[{r}]")
        entry = _Router(RouterState(router_id, router.name, vpc.id, ()))
        built.routers.append(entry)
        for s in router.subnets:
            subnet_id = vpc_entry.subnets[s].id
            url = f"{base}{path(router_id, 'add_router_interface')}"
            reply = await client.call("add_router_interface", "PUT", url, {"subnet_id": subnet_id})
            # An unknown subnet is a 200 with every field null: Alcor attached nothing.
            if not isinstance(reply, dict) or reply.get("subnet_id") != subnet_id:
                log.warning(
                    "alcor_reply_unexpected", operation="add_router_interface", reply=str(reply)[:200]
                )
                raise FailedPrecondition(
                    f"alcor did not attach subnet {subnet_id} to router {router_id} (its reply names no "
                    "such subnet)"
                )
            entry.subnet_ids.append(subnet_id)

    # --- remove --------------------------------------------------------------------------------

    async def remove(
        self,
        state: NetworkState,
        keep: NetworkState | None = None,
        progress: DeleteProgress | None = None,
        *,
        best_effort: bool = False,
    ) -> None:
        """Alcor's order: router interfaces, routers, subnets, VPCs, rules and groups, nodes last."""
        async with self._client() as client:
            await self._remove(client, state, keep, progress or DeleteProgress(), best_effort=best_effort)

    async def _remove(
        self,
        client: AlcorClient,
        state: NetworkState,
        keep: NetworkState | None,
        progress: DeleteProgress,
        *,
        best_effort: bool,
    ) -> None:
        failures = 0
        for step, call in self._steps(client, state, keep):
            if step in progress.done:
                continue
            try:
                await call()
            except MerakError as exc:
                if not best_effort:
                    raise
                failures += 1
                log.warning(
                    "alcor_undo_step_failed", netconfig_id=state.netconfig_id, step=step, error=exc.message
                )
                continue
            await progress.mark(step)
        if failures:
            log.warning("alcor_undo_incomplete", netconfig_id=state.netconfig_id, failed_steps=failures)

    def _steps(self, client: AlcorClient, state: NetworkState, keep: NetworkState | None) -> list[_Step]:
        ep = state.alcor
        if ep is None:
            raise FailedPrecondition(f"network config {state.netconfig_id!r} has no Alcor endpoints stored")
        kept_vpcs = keep.vpcs if keep else ()
        projects = {vpc.id: vpc.project_id for vpc in state.vpcs}

        def call(
            operation: str, method: str, url: str, body: Any = None, gone: tuple[int, ...] = ()
        ) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                await client.call(operation, method, url, body, gone=gone)

            return run

        steps: list[_Step] = []
        routers = state.routers[len(keep.routers) if keep else 0 :]
        for router in routers:
            project = projects.get(router.vpc_id, "")
            base = f"{ep.router}{path('project', project, 'routers', router.id)}"
            for subnet_id in router.subnet_ids:
                steps.append(
                    (
                        f"iface:{router.id}:{subnet_id}",
                        # 404: the router is gone already.
                        call("remove_router_interface", "PUT", f"{base}/remove_router_interface",
                             {"subnet_id": subnet_id}, gone=(404,)),
                    )
                )  # fmt: skip
        for router in routers:
            project = projects.get(router.vpc_id, "")
            url = f"{ep.router}{path('project', project, 'routers', router.id)}"
            steps.append((f"router:{router.id}", call("delete_router", "DELETE", url)))
        for i, vpc in enumerate(state.vpcs):
            kept = len(kept_vpcs[i].subnets) if i < len(kept_vpcs) else 0
            for subnet in vpc.subnets[kept:]:
                url = f"{ep.subnet}{path('project', vpc.project_id, 'subnets', subnet.id)}"
                steps.append((f"subnet:{subnet.id}", call("delete_subnet", "DELETE", url)))
        for vpc in state.vpcs[len(kept_vpcs) :]:
            url = f"{ep.vpc}{path('project', vpc.project_id, 'vpcs', vpc.id)}"
            steps.append((f"vpc:{vpc.id}", call("delete_vpc", "DELETE", url)))
        groups = state.security_groups[len(keep.security_groups) if keep else 0 :]
        # Every rule before any group, since a rule may name another group as its remote group.
        # 412 is how the SG manager says "unknown".
        for group in groups:
            for rule in group.rules:
                url = f"{ep.sg}{path('project', group.project_id, 'security-group-rules', rule.id)}"
                steps.append(
                    (f"rule:{rule.id}", call("delete_security_group_rule", "DELETE", url, gone=(412,)))
                )
        for group in groups:
            url = f"{ep.sg}{path('project', group.project_id, 'security-groups', group.id)}"
            steps.append((f"sg:{group.id}", call("delete_security_group", "DELETE", url, gone=(412,))))
        for node in state.nodes[len(keep.nodes) if keep else 0 :]:
            url = f"{ep.node}{path('nodes', node.id)}"
            steps.append((f"node:{node.id}", call("delete_node", "DELETE", url)))
        return steps


def _describe(exc: BaseException) -> str:
    return exc.message if isinstance(exc, MerakError) else f"{type(exc).__name__}: {exc}"
