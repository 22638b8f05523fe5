"""Addresses for VM ports from the native plugin's subnets: batches, idempotent per VM, race-free in Redis."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from merak.errors import FailedPrecondition, InvalidArgument, MerakError, NotFound, ResourceExhausted
from merak.ids import check_id
from services.network.metrics import NetworkMetrics
from services.network.models import NetworkState, PortAllocation, PortRequest, SubnetState, VpcState, port_mac
from services.network.store import AllocationFailure, HeldAddress, NetworkStore, SubnetPool


class Ipam:
    """Port addresses of a network config: one bitmap per subnet and a vm_id → address hash (store); in
    a subnet with host blocks, which host owns which block (a host's VMs get addresses from its blocks)."""

    def __init__(self, store: NetworkStore, metrics: NetworkMetrics) -> None:
        self.store = store
        self.metrics = metrics

    async def allocate(self, state: NetworkState, requests: Sequence[PortRequest]) -> list[PortAllocation]:
        """One address per request, in order; a VM that has one gets the same one back."""
        allocations, _ = await self.allocate_fresh(state, requests)
        return allocations

    async def allocate_fresh(
        self, state: NetworkState, requests: Sequence[PortRequest]
    ) -> tuple[list[PortAllocation], list[str]]:
        """As `allocate`, with the VMs this call gave an address to (what undoing it would release)."""
        with self._timed("allocate_ports"):
            return await self._allocate(state, requests)

    async def _allocate(
        self, state: NetworkState, requests: Sequence[PortRequest]
    ) -> tuple[list[PortAllocation], list[str]]:
        targets = _targets(state, requests)
        pools: list[SubnetPool] = []
        pool_of: dict[int, int] = {}
        triples: list[tuple[str, int, str]] = []
        for request, (_, subnet) in zip(requests, targets, strict=True):
            if subnet.slot not in pool_of:
                pool_of[subnet.slot] = len(pools)
                pools.append(
                    SubnetPool(
                        subnet.slot, subnet.capacity, subnet.block_size, subnet.blocks, subnet.block_prefix
                    )
                )
            host = request.host if subnet.block_prefix else ""
            triples.append((request.vm_id, pool_of[subnet.slot], host))
        outcome = await self.store.allocate(state.netconfig_id, pools, triples)
        if isinstance(outcome, AllocationFailure):
            raise _failure(state, outcome, requests, targets, pools)
        fresh = list(
            dict.fromkeys(r.vm_id for r, value in zip(requests, outcome, strict=True) if value[0] == "+")
        )
        self.metrics.allocated.inc(len(fresh))
        self.metrics.borrowed.inc(sum(1 for value in outcome if value[0] == "+" and "/32@" in value))
        allocations = [
            _allocation(request, vpc, subnet, value.lstrip("+"))
            for request, (vpc, subnet), value in zip(requests, targets, outcome, strict=True)
        ]
        return allocations, fresh

    async def release(self, state: NetworkState, vm_ids: Sequence[str]) -> int:
        """Give back the addresses of these VMs; ids without one are ignored."""
        with self._timed("release_ports"):
            return await self._release(state, vm_ids)

    @contextmanager
    def _timed(self, operation: str) -> Iterator[None]:
        """The native control plane is timed like Alcor's: one sample per call, with its outcome."""
        started, code = time.perf_counter(), "OK"
        try:
            yield
        except MerakError as exc:
            code = exc.code.name
            raise
        except Exception:
            code = "INTERNAL"
            raise
        finally:
            self.metrics.control_plane.observe(
                "native", operation, code, time.perf_counter() - started, service="ipam"
            )

    async def _release(self, state: NetworkState, vm_ids: Sequence[str]) -> int:
        unique = list(dict.fromkeys(v for v in vm_ids if v))
        held = [
            (vm_id, value)
            for vm_id, value in zip(unique, await self.store.lookup(state.netconfig_id, unique), strict=True)
            if value is not None
        ]
        sizes = {subnet.slot: subnet.block_size for _, subnet in state.subnets() if subnet.block_prefix}
        released = await self.store.release(state.netconfig_id, held, sizes)
        self.metrics.released.inc(released)
        return released

    async def allocated(self, state: NetworkState) -> dict[int, int]:
        """Addresses handed out per subnet slot."""
        return await self.store.allocated(state.netconfig_id)


def _targets(state: NetworkState, requests: Sequence[PortRequest]) -> list[tuple[VpcState, SubnetState]]:
    """The subnet each request asks for; InvalidArgument names the first bad request."""
    vpcs = {vpc.id: vpc for vpc in state.vpcs}
    subnets = {subnet.id: (vpc, subnet) for vpc, subnet in state.subnets()}
    where = f"network config {state.netconfig_id!r}"
    targets = []
    for i, request in enumerate(requests):
        field = f"ports[{i}]"
        if not request.vm_id:
            raise InvalidArgument(f"{field}.vm_id", "required")
        if request.host:
            check_id(f"{field}.host", request.host)
        if request.vpc_id and request.vpc_id not in vpcs:
            raise InvalidArgument(f"{field}.vpc_id", f"unknown VPC {request.vpc_id!r} in {where}")
        if request.subnet_id:
            found = subnets.get(request.subnet_id)
            if found is None or (request.vpc_id and found[0].id != request.vpc_id):
                inside = f"VPC {request.vpc_id!r} of {where}" if request.vpc_id else where
                raise InvalidArgument(
                    f"{field}.subnet_id", f"unknown subnet {request.subnet_id!r} in {inside}"
                )
            targets.append(found)
        elif request.vpc_id and len(vpcs[request.vpc_id].subnets) == 1:
            vpc = vpcs[request.vpc_id]
            targets.append((vpc, vpc.subnets[0]))
        else:
            raise InvalidArgument(f"{field}.subnet_id", "required (unless the VPC has exactly one subnet)")
        subnet = targets[-1][1]
        if subnet.block_prefix and not request.host:
            raise InvalidArgument(
                f"{field}.host",
                f"required: subnet {subnet.id!r} gives each host its own "
                f"/{subnet.block_prefix} address blocks",
            )
    return targets


def _allocation(request: PortRequest, vpc: VpcState, subnet: SubnetState, value: str) -> PortAllocation:
    # "slot:offset", or "slot:offset/len@host" with host blocks (parsed by hand: a million VMs pass here).
    where, _, blocked = value.partition("/")
    offset = int(where.partition(":")[2])
    base = subnet.network.network_address
    ip = str(base + offset)
    route = ""
    if blocked:
        # The block the address is in (the host's own), or the address alone when borrowed.
        length = int(blocked.partition("@")[0])
        route = f"{base + (offset & ~((1 << (32 - length)) - 1))}/{length}"
    return PortAllocation(
        vm_id=request.vm_id,
        vpc_id=vpc.id,
        subnet_id=subnet.id,
        ip=ip,
        prefix_len=subnet.prefix_len,
        mac=port_mac(vpc.vni, ip),
        gateway=subnet.gateway,
        vni=vpc.vni,
        gateway_mac=vpc.gateway_mac,
        cidr=subnet.cidr,
        route=route,
    )


def _failure(
    state: NetworkState,
    failure: AllocationFailure,
    requests: Sequence[PortRequest],
    targets: list[tuple[VpcState, SubnetState]],
    pools: list[SubnetPool],
) -> Exception:
    if failure.reason == "MISSING":
        return NotFound(f"network config {state.netconfig_id!r} does not exist")
    if failure.reason == "CONFLICT":
        request, target = requests[failure.index], targets[failure.index][1]
        if not failure.detail:  # asked twice in this call: for two subnets, or two hosts
            earlier = next(i for i, r in enumerate(requests) if r.vm_id == request.vm_id)
            if targets[earlier][1].slot == target.slot:
                return FailedPrecondition(
                    f"ports[{failure.index}].host: VM {request.vm_id!r} is asked for on hosts "
                    f"{requests[earlier].host!r} and {request.host!r} in one call"
                )
            return FailedPrecondition(
                f"ports[{failure.index}].subnet_id: VM {request.vm_id!r} is asked for in two subnets "
                "in one call"
            )
        current = HeldAddress.parse(failure.detail)
        held = next((s for _, s in state.subnets() if s.slot == current.slot), None)
        address = (
            f"{ipaddress.IPv4Address(int(held.network.network_address) + current.offset)}"
            if held is not None
            else ""
        )
        if held is not None and held.slot == target.slot:
            return FailedPrecondition(
                f"ports[{failure.index}].host: VM {request.vm_id!r} holds {address} on host "
                f"{current.host!r}; release it before asking for another host"
            )
        where = f"{address} in subnet {held.id!r}" if held is not None else "an address in another subnet"
        return FailedPrecondition(
            f"ports[{failure.index}].subnet_id: VM {request.vm_id!r} holds {where}; "
            "release it before asking for another subnet"
        )
    pool = pools[failure.index]
    vpc, subnet = next(t for t in targets if t[1].slot == pool.slot)
    return ResourceExhausted(
        f"subnet {subnet.id!r} ({subnet.cidr}) of VPC {vpc.id!r} has only {failure.detail} free "
        f"addresses (of {subnet.capacity}); nothing was allocated"
    )
