"""Alcor's southbound as the stand-in plays it: the goal states DPM and NCM push to each host's agent
when a port is bound to a host or goes (alcor-southbound.md §3), on `PushGoalStatesStream` to the node's
registered `local_ip:server_port`, one GoalStateV2 per call.

When a port is bound to a host, that host gets the port (CREATE, FULL), its VPC and subnets (INFO; the
subnet's tunnel_id is the VPC's segmentation id, the VNI the agent uses), a DHCP entry per fixed IP, the
router of its subnet, and, when it is the host's first port in the VPC, every other host's bound port of
the VPC as a neighbour (`L2/<id>` for a subnet the host has a port in, `L3/<id>` otherwise). Every other
host with a port in the VPC gets the new port as a neighbour (with the subnets it refers to): CREATE on
bind, DELETE when the port goes or moves (its own host then gets a PORT DELETE). A host that already has
a port in the VPC has been sent every neighbour change since, so it is sent changes only: the work is
O(changes), not O(ports) per bind as DPM's full re-send would be.

One worker per host: while a push to it is in flight, later changes gather and go out together as its
next goal state. Knobs: `push_delay` before each push, `push_drop` (the fraction of pushes silently not
sent), `push_error` (the fraction sent without the subnet of their ports, which the host refuses),
`enabled`. Every push is recorded in the state (`AlcorState.pushes`), with per-port times.
Everything here runs on the FakeAlcor's event loop; its bookkeeping is guarded by the state's lock.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc

from alcor.schema import (
    common_pb2,
    dhcp_pb2,
    goalstate_pb2,
    goalstateprovisioner_pb2,
    goalstateprovisioner_pb2_grpc,
    neighbor_pb2,
    port_pb2,
    router_pb2,
    subnet_pb2,
    vpc_pb2,
)
from merak.errors import enum_name
from merak.grpcclient import CHANNEL_OPTIONS as MERAK_CHANNEL_OPTIONS
from merak.grpcclient import open_channel
from merak.logs import get_logger
from merak_tools.alcor_standin.state import AlcorState, Push

log = get_logger(__name__)

ACA_PORT = 50001  # a node registered without server_port: where ACA listens
FORMAT_VERSION = 102  # Alcor's default goal-state message version (V2)
HOST_DVR_MAC = "fe:16:11:00:00:00"  # DPM's constant for every host
PUSH_TIMEOUT = 10.0  # seconds per push, its reply included
PUSH_RETRIES = 2  # more attempts when the host cannot be reached (UNAVAILABLE)
RETRY_WAIT = 0.25  # seconds before the first retry, doubling
_DHCP_IDS = uuid.UUID("5b0c7c4e-8a43-4c1e-9d39-5d1f1e0a9e11")  # namespace of the DHCP entries' ids
_SHOWN = 5  # refused resources named in an outcome
# A host whose agent is not up yet is tried again soon, not after gRPC's default backoff (up to 2 min).
CHANNEL_OPTIONS = (
    *MERAK_CHANNEL_OPTIONS,
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

CREATE, DELETE, INFO = common_pb2.CREATE, common_pb2.DELETE, common_pb2.INFO
Operation: TypeAlias = common_pb2.OperationType.ValueType
SUCCESS, PENDING = common_pb2.SUCCESS, common_pb2.PENDING


class _PushFailed(Exception):
    """No reply from the host, after `attempts` calls."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True, slots=True)
class Host:
    """A registered node as a push goes to it."""

    node_id: str
    name: str
    target: str  # local_ip:server_port
    ip: str  # data-path IP: the key of host_resources, and its neighbours' host_ip_address
    mac: str


@dataclass(frozen=True, slots=True)
class _Binding:
    vpc_id: str
    host: Host
    port: dict[str, Any]  # as it was bound


@dataclass(frozen=True, slots=True)
class _Neighbor:
    operation: Operation
    port: dict[str, Any]
    host: Host  # the host carrying the port


@dataclass
class _Batch:
    """The changes for one host that have not gone out yet; a later change of an id replaces an earlier."""

    ports: dict[str, tuple[Operation, dict[str, Any]]] = field(default_factory=dict)
    neighbors: dict[str, _Neighbor] = field(default_factory=dict)
    vpcs: set[str] = field(default_factory=set)  # the host joined them: it gets all their neighbours


@dataclass
class _Outgoing:
    host: Host
    message: goalstate_pb2.GoalStateV2
    port_ids: tuple[str, ...]
    created: frozenset[str]  # the ports this push creates (applied when answered SUCCESS)
    neighbor_ids: tuple[str, ...]
    injected: bool  # push_error: the ports' subnets were left out


def host_of(node_id: str, node: dict[str, Any]) -> Host:
    """Where a node registered in `POST /nodes/bulk` is pushed to."""
    local_ip = str(node.get("local_ip") or node.get("data-path-ip") or "")
    server_port = node.get("server_port") or ACA_PORT
    target = f"[{local_ip}]:{server_port}" if ":" in local_ip else f"{local_ip}:{server_port}"
    return Host(
        node_id=node_id,
        name=str(node.get("node_name") or node_id),
        target=target,
        ip=str(node.get("data-path-ip") or local_ip),
        mac=str(node.get("mac_address") or ""),
    )


def _fixed_ips(port: dict[str, Any]) -> list[tuple[str, str]]:
    """(subnet id, IP address) of each of a port's fixed IPs."""
    return [
        (str(fixed.get("subnet_id") or ""), str(fixed.get("ip_address") or ""))
        for fixed in port.get("fixed_ips") or []
        if isinstance(fixed, dict)
    ]


def _port_state(operation: Operation, port: dict[str, Any]) -> port_pb2.PortState:
    """A port as DPM sends it: revision 1 (ACA aborts on 0), FULL."""
    config = port_pb2.PortConfiguration(
        revision_number=1,
        id=str(port["id"]),
        update_type=common_pb2.FULL,
        vpc_id=str(port.get("network_id") or ""),
        name=str(port.get("name") or ""),
        device_id=str(port.get("device_id") or ""),
        device_owner=str(port.get("device_owner") or ""),
        mac_address=str(port.get("mac_address") or ""),
        admin_state_up=bool(port.get("admin_state_up", True)),
    )
    for subnet_id, ip in _fixed_ips(port):
        config.fixed_ips.add(subnet_id=subnet_id, ip_address=ip)
    for pair in port.get("allowed_address_pairs") or []:
        if isinstance(pair, dict):
            config.allow_address_pairs.add(
                ip_address=str(pair.get("ip_address") or ""), mac_address=str(pair.get("mac_address") or "")
            )
    for group in port.get("security_groups") or []:
        config.security_group_ids.add(id=str(group))
    return port_pb2.PortState(operation_type=operation, configuration=config)


def _dhcp_id(port_id: str, ip: str) -> str:
    """DPM makes a random id; a stable one lets a later DELETE name the same entry."""
    return str(uuid.uuid5(_DHCP_IDS, f"{port_id}/{ip}"))


def _vpc_state(vpc: dict[str, Any]) -> vpc_pb2.VpcState:
    # DPM leaves the VPC's tunnel_id 0: the agent reads the VNI from the subnet.
    config = vpc_pb2.VpcConfiguration(
        revision_number=1,
        id=str(vpc["id"]),
        project_id=str(vpc.get("project_id") or ""),
        name=str(vpc.get("name") or ""),
        cidr=str(vpc.get("cidr") or ""),
    )
    return vpc_pb2.VpcState(operation_type=INFO, configuration=config)


def _subnet_state(subnet: dict[str, Any], vpc: dict[str, Any]) -> subnet_pb2.SubnetState:
    detail = subnet.get("gateway_port_detail") or {}
    config = subnet_pb2.SubnetConfiguration(
        revision_number=1,
        id=str(subnet["id"]),
        network_type=common_pb2.VXLAN,
        vpc_id=str(subnet.get("network_id") or ""),
        name=str(subnet.get("name") or ""),
        cidr=str(subnet.get("cidr") or ""),
        tunnel_id=int(vpc.get("provider:segmentation_id") or 0),
        dhcp_enable=bool(subnet.get("enable_dhcp", True)),
    )
    config.gateway.ip_address = str(subnet.get("gateway_ip") or "")
    config.gateway.mac_address = str(detail.get("gateway_macAddress") or "")
    return subnet_pb2.SubnetState(operation_type=INFO, configuration=config)


class _NeighborCache:
    """Neighbour states serialised once and reused: the same port goes to every other host of its VPC
    (a million entries for 100 hosts x 100 ports), and parsing bytes costs a fraction of building."""

    def __init__(self, most: int = 200_000) -> None:
        self.most = most
        self._states: dict[tuple[Any, ...], tuple[str, bytes]] = {}

    def put(self, message: goalstate_pb2.GoalStateV2, entry: _Neighbor, local_subnets: set[str]) -> None:
        """Add the entry's state to `message` (L2 or L3 per fixed IP for the receiving host)."""
        port = entry.port
        fixed = tuple((subnet_id, ip, subnet_id in local_subnets) for subnet_id, ip in _fixed_ips(port))
        named = tuple(str(port.get(k) or "") for k in ("mac_address", "network_id", "name"))
        key = (str(port["id"]), entry.operation, entry.host.ip, entry.host.mac, fixed, named)
        found = self._states.get(key)
        if found is None:
            map_key, state = _neighbor_state(entry, local_subnets)
            if len(self._states) >= self.most:
                self._states.clear()
            found = self._states[key] = (map_key, state.SerializeToString())
        message.neighbor_states[found[0]].MergeFromString(found[1])


def _neighbor_state(entry: _Neighbor, local_subnets: set[str]) -> tuple[str, neighbor_pb2.NeighborState]:
    """(map key, state): L2 for a fixed IP in a subnet the receiving host has a port in, else L3."""
    port = entry.port
    config = neighbor_pb2.NeighborConfiguration(
        revision_number=1,
        id=str(port["id"]),
        update_type=common_pb2.FULL,
        vpc_id=str(port.get("network_id") or ""),
        name=str(port.get("name") or ""),
        mac_address=str(port.get("mac_address") or ""),
        host_mac_address=entry.host.mac,
        host_ip_address=entry.host.ip,
    )
    l2 = False
    for subnet_id, ip in _fixed_ips(port):
        same = subnet_id in local_subnets
        l2 = l2 or same
        config.fixed_ips.add(
            neighbor_type=neighbor_pb2.L2 if same else neighbor_pb2.L3, subnet_id=subnet_id, ip_address=ip
        )
    key = f"{'L2' if l2 else 'L3'}/{port['id']}"
    return key, neighbor_pb2.NeighborState(operation_type=entry.operation, configuration=config)


def _outcome(statuses: Iterable[tuple[int, str, int]]) -> str:
    """A reply read: "ok" when every status is SUCCESS or PENDING (ACA's "later"), else the refused named."""
    refused = [s for s in statuses if s[2] not in (SUCCESS, PENDING)]
    if not refused:
        return "ok"
    named = "; ".join(
        f"{enum_name(common_pb2.ResourceType, kind)} {resource} "
        f"{enum_name(common_pb2.OperationStatus, status)}"
        for kind, resource, status in refused[:_SHOWN]
    )
    more = f" (and {len(refused) - _SHOWN} more)" if len(refused) > _SHOWN else ""
    return f"error: {named}{more}"


class Southbound:
    """Goal-state pushes to hosts' agents, as DPM and NCM make them, for one AlcorState.

    The `port_*` hooks are called by the REST handlers with the state's lock held; workers, one per
    host, run on `loop` (the FakeAlcor's). A push never holds up a REST answer.
    """

    def __init__(
        self,
        state: AlcorState,
        loop: asyncio.AbstractEventLoop,
        *,
        enabled: bool = True,
        push_delay: float = 0.0,
        push_drop: float = 0.0,
        push_error: float = 0.0,
        push_timeout: float = PUSH_TIMEOUT,
        push_retries: int = PUSH_RETRIES,
    ) -> None:
        self.state = state
        self.loop = loop
        self.enabled = enabled
        self.push_delay = push_delay
        self.push_drop = push_drop
        self.push_error = push_error
        self.push_timeout = push_timeout
        self.push_retries = push_retries
        self.rng = random.Random()
        # Guarded by state.lock:
        self._bound: dict[str, _Binding] = {}  # port id -> where it is bound
        self._vpc_hosts: dict[str, dict[str, set[str]]] = {}  # VPC -> node id -> its bound ports there
        self._names: dict[str, str] = {}  # node name -> node id
        self._hosts: dict[str, Host] = {}  # node id -> as last seen
        self._pending: dict[str, _Batch] = {}  # node id -> what it has not been sent yet
        self._dirty: set[str] = set()  # node ids whose worker has to be woken
        self._wake_scheduled = False
        self._neighbor_states = _NeighborCache()
        # Loop only:
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closed = False

    # --- hooks (state.lock held) ---------------------------------------------------------------

    def port_rebound(self, port: dict[str, Any]) -> None:
        """A port's binding:host_id was set, changed or cleared (`port` as it is now)."""
        port_id = str(port["id"])
        old = self._bound.get(port_id)
        if old is not None:
            self._unbind(port_id, old)
        name = str(port.get("binding:host_id") or "")
        if name:
            self._bind(port, name)

    def port_deleted(self, port: dict[str, Any]) -> None:
        """A port went: its host, and the hosts that know it as a neighbour, are told (if bound)."""
        port_id = str(port["id"])
        old = self._bound.get(port_id)
        if old is not None:
            self._unbind(port_id, old)

    def _find(self, name: str) -> Host | None:
        """The node a binding:host_id names: by node_id, else by node_name."""
        nodes = self.state.nodes
        node_id = name if name in nodes else self._names.get(name, "")
        node = nodes.get(node_id)
        if node is None or (node_id != name and node.get("node_name") != name):
            self._names = {str(n.get("node_name")): i for i, n in nodes.items() if n.get("node_name")}
            node_id = self._names.get(name, "")
            node = nodes.get(node_id)
        if node is None:
            return None
        host = self._hosts[node_id] = host_of(node_id, node)
        return host

    def _bind(self, port: dict[str, Any], name: str) -> None:
        port_id = str(port["id"])
        self.state.port_times.setdefault(port_id, {})["bound"] = time.monotonic()
        host = self._find(name)
        if host is None:
            if self.enabled:
                self.state.pushes.append(
                    Push(
                        host=name, target="", sent_at=time.monotonic(), seconds=0.0, port_ids=(port_id,),
                        neighbor_ids=(), outcome=f"error: no node {name!r} is registered",
                    )
                )  # fmt: skip
            return
        vpc_id = str(port.get("network_id") or "")
        self._bound[port_id] = _Binding(vpc_id, host, port)
        hosts = self._vpc_hosts.setdefault(vpc_id, {})
        joined = host.node_id not in hosts
        hosts.setdefault(host.node_id, set()).add(port_id)
        if not self.enabled:
            return
        batch = self._batch(host.node_id)
        batch.ports[port_id] = (CREATE, port)
        if joined:
            batch.vpcs.add(vpc_id)
        neighbor = _Neighbor(CREATE, port, host)
        for node_id in hosts:
            if node_id != host.node_id:
                self._batch(node_id).neighbors[port_id] = neighbor

    def _unbind(self, port_id: str, binding: _Binding) -> None:
        del self._bound[port_id]
        hosts = self._vpc_hosts.get(binding.vpc_id, {})
        mine = hosts.get(binding.host.node_id, set())
        mine.discard(port_id)
        if not mine:
            hosts.pop(binding.host.node_id, None)
        if not hosts:
            self._vpc_hosts.pop(binding.vpc_id, None)
        if not self.enabled:
            return
        self._batch(binding.host.node_id).ports[port_id] = (DELETE, binding.port)
        neighbor = _Neighbor(DELETE, binding.port, binding.host)
        for node_id in hosts:
            if node_id != binding.host.node_id:
                self._batch(node_id).neighbors[port_id] = neighbor

    def _batch(self, node_id: str) -> _Batch:
        """The host's pending changes; its worker is woken (once, however many changes come)."""
        batch = self._pending.get(node_id)
        if batch is None:
            batch = self._pending[node_id] = _Batch()
        self._dirty.add(node_id)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self.loop.call_soon_threadsafe(self._wake)
        return batch

    # --- workers (the loop) ---------------------------------------------------------------------

    def _wake(self) -> None:
        with self.state.lock:
            dirty, self._dirty = self._dirty, set()
            self._wake_scheduled = False
        if self._closed:
            return
        for node_id in dirty:
            if node_id not in self._workers:
                self._wakes[node_id] = asyncio.Event()
                self._workers[node_id] = self.loop.create_task(self._work(node_id), name=f"push-{node_id}")
            self._wakes[node_id].set()

    async def _work(self, node_id: str) -> None:
        """Push the host's changes, one goal state at a time; what comes meanwhile goes in the next."""
        wake = self._wakes[node_id]
        while True:
            await wake.wait()
            wake.clear()
            if self.push_delay > 0:
                await asyncio.sleep(self.push_delay)
            try:
                with self.state.lock:
                    batch = self._pending.pop(node_id, None)
                    outgoing = self._build(self._hosts[node_id], batch) if batch else None
                if outgoing is not None:
                    await self._push(outgoing)
            except Exception:  # a bug here must not end the host's pushes for good
                log.exception("alcor_standin_push_crashed", node=node_id)

    def _build(self, host: Host, batch: _Batch) -> _Outgoing:
        """The host's GoalStateV2 for a batch of changes; state.lock held."""
        state = self.state
        message = goalstate_pb2.GoalStateV2(format_version=FORMAT_VERSION)
        subnet_ids: set[str] = set()
        port_subnets: set[str] = set()
        routers: set[str] = set()
        created: set[str] = set()
        for port_id, (operation, port) in batch.ports.items():
            message.port_states[port_id].CopyFrom(_port_state(operation, port))
            if operation == CREATE:
                created.add(port_id)
            vpc = state.vpcs.get(str(port.get("network_id") or ""))
            if vpc is not None:
                message.vpc_states[vpc["id"]].CopyFrom(_vpc_state(vpc))
            fixed = _fixed_ips(port)
            if fixed:
                port_subnets.add(fixed[0][0])
            for subnet_id, ip in fixed:
                subnet_ids.add(subnet_id)
                dhcp_id = _dhcp_id(port_id, ip)
                dhcp = message.dhcp_states[dhcp_id]
                dhcp.operation_type = operation
                dhcp.configuration.CopyFrom(
                    dhcp_pb2.DHCPConfiguration(
                        revision_number=1, id=dhcp_id, update_type=common_pb2.FULL, subnet_id=subnet_id,
                        mac_address=str(port.get("mac_address") or ""), ipv4_address=ip,
                    )
                )  # fmt: skip
                router_id = (state.subnets.get(subnet_id) or {}).get("attached_router_id")
                if router_id and operation == CREATE:
                    routers.add(str(router_id))
        neighbors = dict(batch.neighbors)
        for vpc_id in batch.vpcs:  # the host joined the VPC: every port of the others' is a neighbour
            for node_id, port_ids in self._vpc_hosts.get(vpc_id, {}).items():
                if node_id == host.node_id:
                    continue
                for port_id in port_ids:
                    bound = self._bound[port_id]
                    neighbors[port_id] = _Neighbor(CREATE, state.ports.get(port_id, bound.port), bound.host)
        # The subnets the host has ports in, in the VPCs this push is about: L2 there, L3 elsewhere.
        vpcs = {str(port.get("network_id") or "") for _op, port in batch.ports.values()}
        vpcs.update(str(entry.port.get("network_id") or "") for entry in neighbors.values())
        local_subnets = {
            subnet_id
            for vpc_id in vpcs
            for port_id in self._vpc_hosts.get(vpc_id, {}).get(host.node_id, ())
            for subnet_id, _ip in _fixed_ips(self._bound[port_id].port)
        } | subnet_ids
        for entry in neighbors.values():
            self._neighbor_states.put(message, entry, local_subnets)
            subnet_ids.update(subnet_id for subnet_id, _ip in _fixed_ips(entry.port))
        for router_id in sorted(routers):
            router = router_pb2.RouterConfiguration(
                revision_number=1,
                id=router_id,
                update_type=common_pb2.FULL,
                host_dvr_mac_address=HOST_DVR_MAC,
            )
            for attached in state.subnets.values():
                if attached.get("attached_router_id") == router_id:
                    router.subnet_routing_tables.add(subnet_id=str(attached["id"]))
                    subnet_ids.add(str(attached["id"]))
            message.router_states[router_id].CopyFrom(
                router_pb2.RouterState(operation_type=INFO, configuration=router)
            )
        injected = self.push_error > 0 and self.rng.random() < self.push_error
        left_out = (port_subnets or subnet_ids) if injected else set()
        for subnet_id in sorted(subnet_ids - left_out):
            subnet = state.subnets.get(subnet_id)
            vpc = state.vpcs.get(str((subnet or {}).get("network_id") or ""))
            if subnet is not None and vpc is not None:
                message.subnet_states[subnet_id].CopyFrom(_subnet_state(subnet, vpc))
        resources = message.host_resources[host.ip].resources
        for kind, keys in (
            (common_pb2.VPC, message.vpc_states),
            (common_pb2.SUBNET, message.subnet_states),
            (common_pb2.PORT, message.port_states),
            (common_pb2.DHCP, message.dhcp_states),
            (common_pb2.ROUTER, message.router_states),
            (common_pb2.NEIGHBOR, message.neighbor_states),
        ):
            for key in keys:
                resources.add(type=kind, id=key)
        return _Outgoing(
            host=host,
            message=message,
            port_ids=tuple(batch.ports),
            created=frozenset(created),
            neighbor_ids=tuple(neighbors),
            injected=injected,
        )

    async def _push(self, outgoing: _Outgoing) -> None:
        """Send one goal state (or drop it), and record how it went."""
        started = time.monotonic()
        statuses: tuple[tuple[int, str, int], ...] = ()
        attempts = 0
        if self.push_drop > 0 and self.rng.random() < self.push_drop:
            outcome = "dropped"
        else:
            try:
                reply, attempts = await self._send(outgoing.host.target, outgoing.message)
            except _PushFailed as exc:
                outcome, attempts = f"failed: {exc}", exc.attempts
            except Exception as exc:
                outcome = f"failed: {type(exc).__name__}: {exc}"
            else:
                statuses = tuple(
                    (s.resource_type, s.resource_id, s.operation_status) for s in reply.operation_statuses
                )
                outcome = _outcome(statuses)
                if outgoing.injected and outcome == "ok":
                    outcome = "error: subnets left out (push_error); the reply refused nothing"
        answered = time.monotonic()
        with self.state.lock:
            self.state.pushes.append(
                Push(
                    host=outgoing.host.name,
                    target=outgoing.host.target,
                    sent_at=started,
                    seconds=answered - started,
                    port_ids=outgoing.port_ids,
                    neighbor_ids=outgoing.neighbor_ids if self.state.record else (),
                    outcome=outcome,
                    statuses=statuses,
                    neighbors=len(outgoing.neighbor_ids),
                    attempts=attempts,
                )
            )
            for kind, resource_id, status in statuses:
                if kind == common_pb2.PORT and status == SUCCESS and resource_id in outgoing.created:
                    self.state.port_times.setdefault(resource_id, {})["applied"] = answered

    async def _send(
        self, target: str, message: goalstate_pb2.GoalStateV2
    ) -> tuple[goalstateprovisioner_pb2.GoalStateOperationReply, int]:
        """One GoalStateV2 on one PushGoalStatesStream call, half-closed, its single reply read (as NCM
        sends them); again after a short wait while the host cannot be reached. (reply, attempts)."""
        channel = self._channels.get(target)
        if channel is None:
            # Plaintext, as Alcor's NCM speaks to ACA.
            channel = self._channels[target] = open_channel(target, CHANNEL_OPTIONS, ours=False)
        stub = goalstateprovisioner_pb2_grpc.GoalStateProvisionerStub(channel)
        wait = RETRY_WAIT
        attempt = 1
        while True:
            call = stub.PushGoalStatesStream(iter((message,)), timeout=self.push_timeout)
            try:
                reply = await call.read()
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or attempt > self.push_retries:
                    raise _PushFailed(f"{exc.code().name}: {exc.details()}", attempt) from None
            else:
                if not isinstance(reply, goalstateprovisioner_pb2.GoalStateOperationReply):  # EOF
                    code = await call.code()
                    raise _PushFailed(f"the host ended the call ({code.name}) without a reply", attempt)
                await call.code()  # the host ends the call after its one reply, as ACA does
                return reply, attempt
            await asyncio.sleep(wait)
            wait *= 2
            attempt += 1

    async def close(self) -> None:
        """Stop the workers (a push under way is abandoned) and close the channels."""
        self._closed = True
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(None)
