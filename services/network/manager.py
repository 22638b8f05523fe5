"""Network config lifecycle: validate everything, make it through the plugin, store it in one step."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import Gauge

from merak import callstats
from merak.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unimplemented
from merak.ids import check_id
from merak.logs import get_logger
from merak.skips import Skips
from merak.v1 import common_pb2, network_pb2
from services.network.ipam import Ipam
from services.network.metrics import NetworkMetrics
from services.network.models import (
    NetworkState,
    NetworkView,
    PortAllocation,
    PortRequest,
    PortUp,
    SubnetState,
)
from services.network.plugins import DeleteProgress, NetworkPlugin, PluginRegistry
from services.network.spec import check_extends, spec_from_proto
from services.network.store import NetworkStore

log = get_logger(__name__)

_ALCOR_PORTS = "with the alcor plugin, ports come from Alcor through the agent's PRECREATE"
# WaitPortsUp: how long it waits when the request says nothing, and at most.
WAIT_UP_DEFAULT = 60.0
WAIT_UP_MAX = 600.0


class NetworkManager:
    """Implements CREATE / INFO / DELETE / UPDATE of network configs, and port addresses."""

    def __init__(
        self, store: NetworkStore, plugins: PluginRegistry, ipam: Ipam, metrics: NetworkMetrics
    ) -> None:
        self.store = store
        self.plugins = plugins
        self.ipam = ipam
        self.metrics = metrics
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, netconfig_id: str) -> asyncio.Lock:
        return self._locks.setdefault(netconfig_id, asyncio.Lock())

    async def load(self) -> None:
        """Count what the stored network configs hold (a restarted service carries on with them)."""
        for netconfig_id in await self.store.ids():
            state = await self.store.state(netconfig_id)
            if state is not None:
                _count(self.metrics.objects, state, 1)

    # --- CREATE --------------------------------------------------------------------------------

    async def create(
        self, config: network_pb2.InternalNetConfigConfiguration, skips: Skips | None = None
    ) -> NetworkView:
        """Make the network config; the same request again is a no-op, a different one ALREADY_EXISTS.
        What the config asked for and is left out (as Merak left it out) is said in `skips`."""
        spec = spec_from_proto(config, skips)
        plugin = self.plugins.get(spec.plugin)
        plugin.check(spec)
        async with self._lock(spec.netconfig_id):
            existing = await self.store.get(spec.netconfig_id)
            if existing is not None:
                return await self._same_or_conflict(existing.config, existing.state, config)
            with callstats.recording() as made:
                state = await plugin.apply(spec, None)
            try:
                created = await self.store.create(config, state, _ipam_subnets(plugin, state, None))
            except BaseException:
                await plugin.remove(state, best_effort=True)
                raise
            if created:
                await self.store.add_calls(spec.netconfig_id, made)
            if not created:  # another process stored this id between our read and our write
                await plugin.remove(state, best_effort=True)
                existing = await self.store.get(spec.netconfig_id)
                if existing is None:
                    raise FailedPrecondition(f"network config {spec.netconfig_id!r} is changing; try again")
                return await self._same_or_conflict(existing.config, existing.state, config)
        _count(self.metrics.objects, state, 1)
        log.info(
            "network_config_created", netconfig_id=spec.netconfig_id, plugin=plugin.name, **state.counts()
        )
        return await self.view(state)

    async def _same_or_conflict(
        self,
        stored: network_pb2.InternalNetConfigConfiguration,
        state: NetworkState,
        config: network_pb2.InternalNetConfigConfiguration,
    ) -> NetworkView:
        if spec_from_proto(stored) != spec_from_proto(config):
            raise AlreadyExists(
                f"network config {config.netconfig_id!r} exists with a different configuration; "
                "DELETE it first, UPDATE it, or use another netconfig_id"
            )
        return await self.view(state)

    # --- INFO ----------------------------------------------------------------------------------

    async def info(self, netconfig_id: str) -> NetworkView:
        """The network config as it is now, with address counts per subnet and the calls it made into its
        control plane."""
        view = await self.view(await self._state(netconfig_id, "config.netconfig_id"))
        return NetworkView(view.state, view.allocated, tuple(await self.store.calls(netconfig_id)))

    async def view(self, state: NetworkState) -> NetworkView:
        """A state with its address counts."""
        allocated = await self.ipam.allocated(state) if self.plugins.get(state.plugin).allocates_ports else {}
        return NetworkView(state, allocated)

    async def _state(self, netconfig_id: str, field: str) -> NetworkState:
        check_id(field, netconfig_id)
        state = await self.store.state(netconfig_id)
        if state is None:
            raise NotFound(f"network config {netconfig_id!r} does not exist")
        return state

    # --- DELETE --------------------------------------------------------------------------------

    async def delete(self, netconfig_id: str) -> NetworkState | None:
        """Remove everything the config made and forget it; None when there was nothing (not an error)."""
        check_id("config.netconfig_id", netconfig_id)
        async with self._lock(netconfig_id):
            state = await self.store.state(netconfig_id)
            if state is None:
                return None
            plugin = self.plugins.get(state.plugin)

            async def record(step: str) -> None:
                await self.store.mark_deleted(netconfig_id, step)

            done = await self.store.deleted_steps(netconfig_id)
            await plugin.remove(state, progress=DeleteProgress(done, record))
            removed = await self.store.delete(netconfig_id)
        self._locks.pop(netconfig_id, None)
        if removed is not None:
            _count(self.metrics.objects, removed, -1)
        log.info("network_config_deleted", netconfig_id=netconfig_id, plugin=state.plugin, **state.counts())
        return state

    # --- UPDATE --------------------------------------------------------------------------------

    async def update(
        self, config: network_pb2.InternalNetConfigConfiguration, skips: Skips | None = None
    ) -> NetworkView:
        """Add VPCs, subnets, security groups, routers and nodes to an existing config (FULL messages)."""
        if config.message_type == common_pb2.DELTA:
            raise Unimplemented(
                "UPDATE with message_type DELTA is not implemented; send the FULL configuration"
            )
        spec = spec_from_proto(config, skips)
        async with self._lock(spec.netconfig_id):
            stored = await self.store.get(spec.netconfig_id)
            if stored is None:
                raise NotFound(f"network config {spec.netconfig_id!r} does not exist")
            old = spec_from_proto(stored.config)
            check_extends(old, spec)
            plugin = self.plugins.get(stored.state.plugin)
            plugin.check(spec)
            if spec == old:
                return await self.view(stored.state)
            with callstats.recording() as made:
                state = await plugin.apply(spec, stored.state)
            try:
                await self.store.replace(
                    config, stored.state, state, _ipam_subnets(plugin, state, stored.state)
                )
            except BaseException:
                await plugin.remove(state, stored.state, best_effort=True)
                raise
            await self.store.add_calls(spec.netconfig_id, made)
        _count(self.metrics.objects, stored.state, -1)
        _count(self.metrics.objects, state, 1)
        log.info(
            "network_config_updated", netconfig_id=spec.netconfig_id, plugin=plugin.name, **state.counts()
        )
        return await self.view(state)

    # --- ports ---------------------------------------------------------------------------------

    async def find(self, vpc_ids: Sequence[str]) -> str:
        """The network config holding every one of these VPCs; NOT_FOUND, or INVALID_ARGUMENT when they
        are spread over several configs."""
        wanted = {v for v in vpc_ids if v}
        if not wanted:
            raise InvalidArgument("vpc_ids", "required")
        owners: dict[str, set[str]] = {}
        for netconfig_id in await self.store.ids():
            state = await self.store.state(netconfig_id)
            held = {vpc.id for vpc in state.vpcs} & wanted if state is not None else set()
            if held:
                owners[netconfig_id] = held
        whole = [n for n, held in owners.items() if held == wanted]
        if len(whole) == 1:
            return whole[0]
        if not owners:
            raise NotFound(f"no network config holds VPC {sorted(wanted)[0]!r}")
        raise InvalidArgument(
            "vpc_ids", f"the VPCs are not all in one network config (found in {', '.join(sorted(owners))})"
        )

    async def allocate_ports(
        self, netconfig_id: str, requests: Sequence[PortRequest]
    ) -> list[PortAllocation]:
        """An address per request, in order, from this service's IPAM, and the port in the control plane
        when the plugin makes one; a failure gives back the addresses this call handed out."""
        state = await self._state(netconfig_id, "netconfig_id")
        plugin = self._ipam_plugin(state)
        _check_groups(state, requests)
        allocations, fresh = await self.ipam.allocate_fresh(state, requests)
        try:
            return await plugin.make_ports(state, requests, allocations)
        except Exception:
            # Not on cancellation: the plugin's transaction may still commit, and the addresses kept are
            # the ones a retry gets back (idempotent per VM), whichever way it ends.
            await self.ipam.release(state, fresh)
            raise

    async def release_ports(self, netconfig_id: str, vm_ids: Sequence[str]) -> int:
        """Remove these VMs' ports and give back their addresses; returns how many were held."""
        state = await self._state(netconfig_id, "netconfig_id")
        plugin = self._ipam_plugin(state)
        await plugin.release_ports(state, list(dict.fromkeys(v for v in vm_ids if v)))
        return await self.ipam.release(state, vm_ids)

    async def wait_ports_up(self, netconfig_id: str, vm_ids: Sequence[str], timeout: float) -> list[PortUp]:
        """Per VM (in order, once each), whether its port came up in the control plane within `timeout`
        seconds (0: WAIT_UP_DEFAULT); returns as soon as every port is up."""
        if timeout == 0:
            timeout = WAIT_UP_DEFAULT
        if not 0 < timeout <= WAIT_UP_MAX:  # NaN fails too
            raise InvalidArgument(
                "timeout_seconds", f"{timeout} is not in (0, {WAIT_UP_MAX:.0f}] (0: {WAIT_UP_DEFAULT:.0f} s)"
            )
        for i, vm_id in enumerate(vm_ids):
            if not vm_id:
                raise InvalidArgument(f"vm_ids[{i}]", "required")
        state = await self._state(netconfig_id, "netconfig_id")
        wanted = list(dict.fromkeys(vm_ids))
        if not wanted:
            return []
        return await self.plugins.get(state.plugin).wait_ports_up(state, wanted, timeout)

    def _ipam_plugin(self, state: NetworkState) -> NetworkPlugin:
        plugin = self.plugins.get(state.plugin)
        if not plugin.allocates_ports:
            raise FailedPrecondition(
                f"network config {state.netconfig_id!r} uses the {state.plugin} plugin; {_ALCOR_PORTS}"
            )
        return plugin


def _check_groups(state: NetworkState, requests: Sequence[PortRequest]) -> None:
    """Every security group a port names is one of the config's."""
    known = {group.id for group in state.security_groups}
    for i, request in enumerate(requests):
        for j, group_id in enumerate(request.security_group_ids):
            if group_id not in known:
                raise InvalidArgument(
                    f"ports[{i}].security_group_ids[{j}]",
                    f"unknown security group {group_id!r} in network config {state.netconfig_id!r}",
                )


def _ipam_subnets(
    plugin: NetworkPlugin, state: NetworkState, before: NetworkState | None
) -> list[SubnetState]:
    """Subnets whose address bitmaps must be made now: the new ones, when the plugin hands out ports."""
    if not plugin.allocates_ports:
        return []
    known = {s.slot for _, s in before.subnets()} if before else set()
    return [s for _, s in state.subnets() if s.slot not in known]


def _count(objects: Gauge, state: NetworkState, sign: int) -> None:
    objects.labels(state.plugin, "network_config").inc(sign)
    for kind, n in state.counts().items():
        objects.labels(state.plugin, kind).inc(sign * n)
