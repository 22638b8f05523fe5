"""The local backend's kernel work: a topology's namespaces, veth pairs and bridges, made and removed
by worker threads, each inside the namespace it works on (merak.netns), with raw rtnetlink messages
sent together (merak.rtnl): pyroute2 spent ~1 ms of Python per request, most of the 6.4 s that 1,000
vhosts took to build; raw messages build them in ~1 s."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from merak import netns, rtnl
from services.topology.backends import impair
from services.topology.diff import TopologyDiff
from services.topology.models import Link, Node, Topology, vhost_mac
from services.topology.names import ns_name, ns_prefix, vm_ns_prefix

BRIDGE = "br0"
EEXIST = 17
ENODEV = 19


class BuildStopped(Exception):
    """A kernel build was told to stop (its topology is being deleted)."""


class Kernel:
    """Builds and removes the namespaces, links and bridges of topologies with a pool of threads."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="netns")
        self._netem: bool | None = None  # whether the kernel has netem, once probed

    async def build(self, topology: Topology) -> None:
        """Every node and link of the topology (see _build_parts); a caller cancelled meanwhile
        waits for the build to stop before its next step (a DELETE while it builds)."""
        await _uninterrupted(lambda stop: self._build_parts(topology, topology.nodes, topology.links, stop))

    async def rebuild(self, new: Topology, change: TopologyDiff) -> None:
        """Links that go (from their a side, the peer goes with it), nodes that go, then what comes as
        a build does it: namespaces, bridges, links from their a side, b sides and addresses."""
        await _uninterrupted(lambda stop: self._rebuild(new, change, stop))

    def present(self, short_id: str) -> set[str]:
        """The topology's namespaces that exist now."""
        return set(netns.list_names(ns_prefix(short_id)))

    def remove_topology(self, short_id: str) -> tuple[int, list[str]]:
        """Delete every namespace of the topology (its nodes' and its VMs'), each tried whatever the
        others did: how many went, and the ones that did not as "name (why)"."""
        removed, left = 0, []
        for name in netns.list_names(ns_prefix(short_id)):
            try:
                netns.remove(name)
            except OSError as exc:
                left.append(f"{name} ({exc.strerror or exc})")
                continue
            removed += 1
        return removed, left

    def vhosts_holding_vms(self, old: Topology, change: TopologyDiff) -> list[str]:
        """The vhosts that `change` removes and that still hold VMs, as "name (count)"."""
        busy = []
        for node in change.removed_nodes:
            if node.is_switch:
                continue
            prefix = f"{vm_ns_prefix(old.spec.short_id, change.positions[node.name])}-"
            vms = [ns for ns in netns.list_names(prefix) if not ns.startswith(f"{prefix}vpc")]
            if vms:
                busy.append(f"{node.name} ({len(vms)})")
        return busy

    async def apply_faults(self, ns: str, devices: dict[str, impair.DeviceFaults]) -> None:
        """The devices of namespace `ns` suffer `devices` (backends/impair.py)."""
        await asyncio.get_running_loop().run_in_executor(self._pool, impair.apply, ns, devices)

    async def has_netem(self) -> bool:
        """Whether the kernel has the netem qdisc (probed once on a scratch namespace)."""
        if self._netem is None:
            self._netem = await asyncio.get_running_loop().run_in_executor(self._pool, impair.netem_available)
        return self._netem

    def close(self) -> None:
        """Stop the worker threads (after the work they hold)."""
        self._pool.shutdown(wait=True)

    def _build_parts(
        self, topology: Topology, nodes: Sequence[Node], links: Sequence[Link], stop: threading.Event
    ) -> None:
        """`nodes` and `links` of `topology`: namespaces first, then bridges, then links from their a
        side, then the b sides and the new vhosts' addresses. Idempotent: what exists is kept."""
        short = topology.spec.short_id
        ns_of = {node.name: ns_name(short, node.name) for node in topology.nodes}
        self._parallel(_create_ns, [(ns_of[n.name],) for n in nodes], stop=stop)
        # Switches get their bridge before any port joins it; a vhost's loopback comes up when its NICs
        # do (_finish_node): one visit of its namespace fewer (a netlink socket costs more than `lo up`).
        switches = [n for n in nodes if n.is_switch]
        self._parallel(_prepare_node, [(ns_of[n.name], True) for n in switches], in_ns=True, stop=stop)
        by_a: dict[str, list[Link]] = defaultdict(list)
        by_b: dict[str, list[str]] = defaultdict(list)
        for link in links:
            by_a[link.a_node].append(link)
            by_b[link.b_node].append(link.b_nic)
        vhost_index = {node.name: i for i, node in enumerate(topology.vhosts())}
        # A vhost's first NIC has the vhost's MAC from birth (its IPv6 link-local address follows it).
        macs = {
            f"{node.name}/{node.nics[0].name}": vhost_mac(short, index)
            for node in topology.nodes
            if (index := vhost_index.get(node.name)) is not None and node.nics
        }
        self._parallel(
            _create_links,
            [(ns_of[a], topology.node(a).is_switch, group, macs, ns_of) for a, group in by_a.items()],
            in_ns=True,
            stop=stop,
        )
        fresh = {node.name for node in nodes}
        jobs = []
        for node in topology.nodes:
            # b sides of the links, and the vhosts built now (a switch without b sides has nothing to do)
            if node.name not in by_b and (node.name not in fresh or node.is_switch):
                continue
            index = vhost_index.get(node.name)
            mac = vhost_mac(short, index) if index is not None else ""
            jobs.append((ns_of[node.name], node, by_b.get(node.name, []), mac))
        self._parallel(_finish_node, jobs, in_ns=True, stop=stop)

    def _rebuild(self, new: Topology, change: TopologyDiff, stop: threading.Event) -> None:
        short = new.spec.short_id
        staying = {node.name for node in new.nodes} - {node.name for node in change.added_nodes}
        going: dict[str, list[str]] = defaultdict(list)
        for link in change.removed_links:
            if link.a_node in staying:
                going[link.a_node].append(link.a_nic)
            elif link.b_node in staying:
                going[link.b_node].append(link.b_nic)
        self._parallel(
            _delete_links, [(ns_name(short, n), nics) for n, nics in going.items()], in_ns=True, stop=stop
        )
        # A vhost that goes takes its VPC namespaces along (its VMs are gone: vhosts_holding_vms).
        leftovers = [
            ns
            for node in change.removed_nodes
            if not node.is_switch
            for ns in netns.list_names(f"{vm_ns_prefix(short, change.positions[node.name])}-")
        ]
        gone = [ns_name(short, n.name) for n in change.removed_nodes] + leftovers
        self._parallel(_remove_ns, [(ns,) for ns in gone], stop=stop)
        self._build_parts(new, change.added_nodes, change.added_links, stop)

    def _parallel(
        self,
        func: Callable[..., None],
        jobs: Sequence[tuple[Any, ...]],
        in_ns: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        def run(args: tuple[Any, ...]) -> None:
            if stop is not None and stop.is_set():
                raise BuildStopped
            if in_ns:
                netns.run_in(args[0], lambda: func(*args))
            else:
                func(*args)

        # Every job ends before this returns (a failure must not leave others still making
        # namespaces behind a DELETE); then the first failure is raised.
        futures = [self._pool.submit(run, args) for args in jobs]
        concurrent.futures.wait(futures)
        for future in futures:
            future.result()


async def _uninterrupted(work: Callable[[threading.Event], None]) -> None:
    """Run `work(stop)` in a thread; when the caller is cancelled, set `stop` and wait for the thread
    to end before the cancellation goes on: what the thread makes after a DELETE removed the
    namespaces would be left behind for good (a CREATE then DELETE leaked its namespaces)."""
    stop = threading.Event()
    future = asyncio.get_running_loop().run_in_executor(None, work, stop)
    try:
        await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait({future})  # neither cancels the thread's future nor raises its error
        raise


# --- run by worker threads inside the namespace concerned ------------------------------------------


def _create_ns(name: str) -> None:
    if not netns.exists(name):
        netns.create(name)


def _remove_ns(name: str) -> None:
    netns.remove(name)


def _must(sock: socket.socket, requests: Sequence[rtnl.Request], tolerated: int = 0) -> list[int]:
    """Send `requests` together; raise for the first refused other than with `tolerated`; the codes."""
    codes = rtnl.call(sock, requests)
    for request, code in zip(requests, codes, strict=True):
        if code and code != tolerated:
            raise rtnl.RtnlError(code, request.step)
    return codes


def _prepare_node(ns: str, is_switch: bool) -> None:
    """Loopback up; a switch's bridge, made up (kept up if it exists)."""
    with rtnl.route_socket() as sock:
        requests = [rtnl.link_set(LOOPBACK_INDEX, "set lo up")]
        if is_switch:
            requests.append(rtnl.bridge(BRIDGE))
        codes = _must(sock, requests, tolerated=EEXIST)
        if is_switch and codes[-1] == EEXIST:
            _must(sock, [rtnl.link_set(_index(sock, BRIDGE), f"set {BRIDGE} up")])


def _index(sock: socket.socket, name: str) -> int:
    found = rtnl.indexes(sock, [name])
    if name not in found:
        raise rtnl.RtnlError(ENODEV, f"find {name}")
    return found[name]


def _create_links(
    ns: str, is_switch: bool, links: Sequence[Link], peer_macs: dict[str, str], ns_of: dict[str, str]
) -> None:
    """The veth pairs of `links`, all made from their a side `ns` in one exchange: the a end up (in the
    bridge of a switch), the b end born in its namespace (brought up by _finish_node), each end with
    its vhost's MAC when it is that vhost's first NIC (`peer_macs`, by "node/nic"). Both ends are born
    in their namespaces: nothing ever appears in the root namespace."""
    with rtnl.route_socket() as sock, contextlib.ExitStack() as fds:
        bridge = _index(sock, BRIDGE) if is_switch else None
        requests = []
        for link in links:
            fd = fds.enter_context(netns.opened(ns_of[link.b_node]))
            requests.append(
                rtnl.veth(
                    link.a_nic,
                    master=bridge,
                    mac=peer_macs.get(f"{link.a_node}/{link.a_nic}", ""),
                    peer=link.b_nic,
                    peer_netns_fd=fd,
                    peer_mac=peer_macs.get(f"{link.b_node}/{link.b_nic}", ""),
                )
            )
        codes = _must(sock, requests, tolerated=EEXIST)
        # Made by an earlier, interrupted build: kept, and its a end made up (in the bridge). An a end
        # that is not here failed for its peer's name, taken in the b namespace.
        kept = [link.a_nic for link, code in zip(links, codes, strict=True) if code == EEXIST]
        found = rtnl.indexes(sock, kept)
        for nic in kept:
            if nic not in found:
                raise rtnl.RtnlError(EEXIST, f"create veth {nic}")
        _must(sock, [rtnl.link_set(found[nic], f"set {nic} up", master=bridge) for nic in kept])


def _delete_links(ns: str, nics: Sequence[str]) -> None:
    with rtnl.route_socket() as sock:
        found = rtnl.indexes(sock, list(nics))
        # A veth: its peer goes with it.
        _must(sock, [rtnl.link_del(index, f"delete {nic}") for nic, index in found.items()], tolerated=ENODEV)


# The loopback device is the first device of every network namespace.
LOOPBACK_INDEX = 1


def _finish_node(ns: str, node: Node, b_nics: list[str], mac: str) -> None:
    """A node's b ends (up, in the bridge of a switch), and a vhost's loopback, first NIC's MAC,
    addresses and NICs up: one lookup and one exchange."""
    with rtnl.route_socket() as sock:
        nics = [nic.name for nic in node.nics] if not node.is_switch else []
        names = list(dict.fromkeys([*b_nics, *nics, *([BRIDGE] if node.is_switch else [])]))
        found = rtnl.indexes(sock, names)
        if node.is_switch:
            bridge = found.get(BRIDGE)
            if bridge is None:
                raise rtnl.RtnlError(ENODEV, f"find {BRIDGE}")
            requests = [
                rtnl.link_set(found[nic], f"set {nic} up", master=bridge) for nic in b_nics if nic in found
            ]
            _must(sock, requests)
            return
        requests = [rtnl.link_set(LOOPBACK_INDEX, "set lo up")]
        addresses = []
        for position, nic in enumerate(node.nics):
            index = found.get(nic.name)
            if index is None:
                continue  # a CUSTOM vhost NIC that no link uses
            requests.append(rtnl.link_set(index, f"set {nic.name} up", mac=mac if position == 0 else ""))
            if nic.ip:
                address, _, prefix = nic.ip.partition("/")
                addresses.append(rtnl.address(index, address, int(prefix)))
        _must(sock, requests)
        _must(sock, addresses, tolerated=EEXIST)
