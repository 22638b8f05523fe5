"""The real data plane of one vhost (DESIGN §5): VPC namespaces with a bridge and VXLAN, VMs as namespaces.

Synchronous and fork-free: every call moves only the calling thread between namespaces with
`merak.netns`, so call it from worker threads, never from an event loop's thread. Netlink goes
through pyroute2; each `IPRoute` is created while the thread is inside the namespace it serves
and is used and closed by that same thread (its socket stays in that namespace).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from merak import netns
from merak.errors import AlreadyExists, FailedPrecondition, NotFound
from merak.logs import get_logger
from services.agent import kernel, netlink_bulk
from services.agent.icmp import ping_from
from services.agent.models import Neighbor, PingResult, VmInfo, VmResult, VmSpec, VpcSpec
from services.agent.netlink_bulk import NTF_MASTER, NUD_NOARP
from services.agent.validation import (
    MAX_IFNAME,
    NAME_RE,
    VPC_NS_RE,
    ZERO_MAC,
    check_ipv4,
    check_name,
    check_vm_name,
    check_vni,
    host_ifname,
    validate_neighbor,
    validate_vm,
    validate_vpc,
)

log = get_logger(__name__)

BRIDGE = "br0"
VM_IFNAME = "eth0"
VXLAN_PORT = 4789
MAIN_TABLE = 254
# IFLA_AF_SPEC of a link without IPv6 addresses (addrgenmode none: IN6_ADDR_GEN_MODE_NONE).
NO_IPV6_ADDRESSES = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]}


@dataclass(slots=True)
class _Vpc:
    """What one VPC namespace holds, read once per call."""

    ns: str
    vpc_id: str
    bridge: int
    vxlan: int
    mtu: int
    links: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _VmState:
    """What a VM namespace's eth0 is configured with."""

    ip: str
    prefix_len: int
    mac: str
    gateway: str
    vpc_id: str


class _VmStepError(Exception):
    """A step of building one VM failed; the message names the step."""


# ----------------------------------------------------------------------------- the data plane


class Dataplane:
    """VPCs and VMs of one vhost, as namespaces `<prefix>-vpc<vni>` and `<prefix>-<vm>`; thread-safe."""

    def __init__(self, vhost_ns: str, prefix: str, underlay_ip: str, underlay_dev: str) -> None:
        """Check the names and addresses; touches no namespace."""
        netns.path_of(vhost_ns)  # validates the name
        check_name("prefix", prefix)
        check_ipv4("underlay_ip", underlay_ip)
        if not isinstance(underlay_dev, str) or not 1 <= len(underlay_dev) <= MAX_IFNAME:
            raise ValueError(f"underlay_dev: {underlay_dev!r} is not an interface name")
        self.vhost_ns = vhost_ns
        self.prefix = prefix
        self.underlay_ip = str(ipaddress.IPv4Address(underlay_ip))
        self.underlay_dev = underlay_dev
        # Changes are serialized per vhost (the kernel's RTNL lock serializes most of them anyway);
        # `ping` takes no lock.
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ names

    def vpc_ns(self, vni: int) -> str:
        """The namespace of the VPC with `vni` on this vhost."""
        return f"{self.prefix}-vpc{vni}"

    def vm_ns(self, vm_name: str) -> str:
        """The namespace of VM `vm_name`."""
        return f"{self.prefix}-{vm_name}"

    def _vpc_namespaces(self) -> dict[int, str]:
        """The VPC namespaces of this vhost by VNI."""
        found: dict[int, str] = {}
        for ns in netns.list_names(f"{self.prefix}-vpc"):
            match = VPC_NS_RE.match(ns[len(self.prefix) + 1 :])
            if match:
                found[int(match.group(1))] = ns
        return found

    def list_vms(self) -> list[str]:
        """Names of the VMs present on this vhost."""
        # Namespaces are the only record, so two instances whose prefixes extend each other by
        # "-..." ("mk-1" and "mk-1-h0") would see each other's VMs: the caller keeps them apart.
        start = len(self.prefix) + 1
        return [
            ns[start:]
            for ns in netns.list_names(f"{self.prefix}-")
            if NAME_RE.match(ns[start:]) and not VPC_NS_RE.match(ns[start:])
        ]

    def describe_vm(self, name: str) -> VmInfo | None:
        """The VM's address, MAC and VPC as its namespace holds them (None: no such VM)."""
        ns = self.vm_ns(name)
        if not netns.exists(ns):
            return None
        state = _read_vm(ns)
        return None if state is None else VmInfo(state.ip, state.mac, state.vpc_id)

    # ------------------------------------------------------------------ VPCs

    def ensure_vpc(self, vpc: VpcSpec) -> None:
        """Create or converge the VPC namespace: lo, br0 with the anycast gateways, forwarding, vx<vni>."""
        validate_vpc(vpc)
        ns = self.vpc_ns(vpc.vni)
        with self._lock:
            created = False
            if not netns.exists(ns):
                netns.create(ns)
                created = True
            try:
                self._converge_vpc(ns, vpc)
            except BaseException:
                if created:
                    self._remove_vpc_ns(ns)
                raise
        log.info("vpc_ensured", vhost=self.vhost_ns, vpc_id=vpc.vpc_id, vni=vpc.vni, created=created)

    def _converge_vpc(self, ns: str, vpc: VpcSpec) -> None:
        """Bring the existing namespace `ns` to `vpc`, with one socket inside it."""
        gateway_mac = vpc.gateway_mac.lower()
        with netns.entered(ns):
            # No IPv6 in the overlay: its link-local chatter would be replicated to every VTEP.
            kernel.set_sysctl("net/ipv6/conf/all/disable_ipv6", "1", optional=True)
            kernel.set_sysctl("net/ipv6/conf/default/disable_ipv6", "1", optional=True)
            kernel.set_sysctl("net/ipv4/ip_forward", "1")
            ipr = IPRoute(groups=0)
        with contextlib.closing(ipr):
            ipr.link("set", index=1, state="up")
            links = kernel.links(ipr)
            bridge = links.get(BRIDGE)
            if bridge is None:
                ipr.link("add", ifname=BRIDGE, kind="bridge", address=gateway_mac)
                bridge = ipr.link("get", ifname=BRIDGE)[0]
            else:
                owner = bridge.get("ifalias") or ""
                if owner and owner != vpc.vpc_id:
                    raise AlreadyExists(f"vni {vpc.vni} is already used by vpc {owner} on {self.vhost_ns}")
                if str(bridge.get("address")).lower() != gateway_mac:
                    ipr.link("set", index=bridge["index"], address=gateway_mac)
            br = int(bridge["index"])
            # The VPC id rides on br0's alias so a restarted agent can check who owns the VNI.
            ipr.link("set", index=br, ifalias=vpc.vpc_id, state="up")
            want = {
                (s.gateway, ipaddress.IPv4Network(s.cidr).prefixlen)
                for s in vpc.subnets  # the same gateway IP and MAC on every vhost: a distributed gateway
            }
            have = kernel.ipv4_addrs(ipr, br)
            for address, prefixlen in sorted(want - have):
                ipr.addr("add", index=br, address=address, prefixlen=prefixlen)
            for address, prefixlen in sorted(have - want):
                ipr.addr("del", index=br, address=address, prefixlen=prefixlen)
            vx_name = f"vx{vpc.vni}"
            vx = links.get(vx_name)
            if vx is None:
                self._create_vxlan(ns, vpc.vni)
                vx = ipr.link("get", ifname=vx_name)[0]
            else:
                self._check_vxlan(vx, vpc.vni)
            ipr.link("set", index=vx["index"], master=br, state="up")
            # ARP suppression: a VM's ARP request for a VM the control plane pushed (a neighbour
            # entry on br0, its MAC behind this port) is answered by the bridge, and not flooded to
            # every VTEP of the VPC: one flat L2 domain of 10,000 VMs otherwise drowns in them.
            ipr.brport("set", index=vx["index"], neigh_suppress=1)

    def _create_vxlan(self, ns: str, vni: int) -> None:
        """Create vx<vni> from the vhost namespace straight into the VPC namespace `ns`."""
        # Asked for by a socket of the vhost namespace, the device's UDP socket and underlay stay
        # there (its link netns) while the device sits in `ns` (IFLA_NET_NS_FD): what create-then-
        # move gives, in one message, so a failure cannot leave it behind in the vhost namespace.
        with kernel.ns_fd(ns) as fd, netns.entered(self.vhost_ns), IPRoute(groups=0) as ipr:
            dev = kernel.link_or_none(ipr, self.underlay_dev)
            if dev is None:
                raise FailedPrecondition(f"underlay device {self.underlay_dev} is not in {self.vhost_ns}")
            if self.underlay_ip not in {address for address, _ in kernel.ipv4_addrs(ipr, dev["index"])}:
                raise FailedPrecondition(
                    f"underlay ip {self.underlay_ip} is not on {self.underlay_dev} in {self.vhost_ns}"
                )
            ipr.link(
                "add",
                ifname=f"vx{vni}",
                kind="vxlan",
                vxlan_id=vni,
                vxlan_local=self.underlay_ip,
                vxlan_link=dev["index"],
                vxlan_port=VXLAN_PORT,
                vxlan_learning=0,
                net_ns_fd=fd,
            )

    def _check_vxlan(self, vx: Any, vni: int) -> None:
        """Refuse an existing vx<vni> that is not the device this vhost would create."""
        data = vx.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        got = (
            data.get("IFLA_VXLAN_ID") if data else None,
            data.get("IFLA_VXLAN_LOCAL") if data else None,
            data.get("IFLA_VXLAN_PORT") if data else None,
        )
        if kernel.link_kind(vx) != "vxlan" or got != (vni, self.underlay_ip, VXLAN_PORT):
            raise FailedPrecondition(
                f"vx{vni} exists with (vni, local, port) {got}, want {(vni, self.underlay_ip, VXLAN_PORT)}"
            )

    def _load_vpc(self, ipr: Any, ns: str, vni: int) -> _Vpc:
        """Read br0, vx<vni> and every link of the VPC namespace with one dump."""
        links = kernel.links(ipr)
        bridge, vx = links.get(BRIDGE), links.get(f"vx{vni}")
        if bridge is None or vx is None:
            raise FailedPrecondition(f"vpc with vni {vni} is incomplete on {self.vhost_ns}: run ensure_vpc")
        return _Vpc(
            ns=ns,
            vpc_id=str(bridge.get("ifalias") or ""),
            bridge=int(bridge["index"]),
            vxlan=int(vx["index"]),
            mtu=int(vx.get("mtu")),
            links=links,
        )

    @contextlib.contextmanager
    def _vpc(self, vni: int) -> Iterator[tuple[Any, _Vpc]]:
        """One socket in the VPC namespace of `vni` and what it holds; FailedPrecondition if not ensured."""
        check_vni("vni", vni)
        ns = self.vpc_ns(vni)
        if not netns.exists(ns):
            raise FailedPrecondition(f"vpc with vni {vni} is not ensured on {self.vhost_ns}")
        with kernel.ipr_in(ns) as ipr:
            yield ipr, self._load_vpc(ipr, ns, vni)

    def _remove_vpc_ns(self, ns: str) -> None:
        """Delete the VPC namespace's devices, then the namespace."""
        # Deleting vx<vni> explicitly frees its VNI and UDP socket in the vhost namespace now; a
        # namespace only goes away when its last reference does, later, in a kernel worker.
        with contextlib.suppress(OSError, NetlinkError), kernel.ipr_in(ns) as ipr:
            kernel.delete_links(
                ipr, {name: int(link["index"]) for name, link in kernel.links(ipr).items() if name != "lo"}
            )
        netns.remove(ns)

    # ------------------------------------------------------------------ VMs

    def create_vms(self, specs: Sequence[VmSpec]) -> list[VmResult]:
        """Create the VMs that do not exist; one result per spec, in order."""
        for spec in specs:
            validate_vm(spec)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"vm names repeat in one batch: {', '.join(duplicates)}")
        started = time.monotonic()
        results: dict[str, VmResult] = {}
        groups: dict[int, list[VmSpec]] = {}
        for spec in specs:
            groups.setdefault(spec.vni, []).append(spec)
        with self._lock:
            for vni, group in groups.items():
                try:
                    with self._vpc(vni) as (ipr, vpc):
                        for spec in group:
                            results[spec.name] = self._create_vm(ipr, vpc, spec)
                except (FailedPrecondition, OSError, NetlinkError) as exc:
                    for spec in group:
                        results.setdefault(spec.name, VmResult(spec.name, ok=False, error=_error_text(exc)))
        ordered = [results[s.name] for s in specs]
        log.info(
            "vms_created",
            vhost=self.vhost_ns,
            requested=len(specs),
            created=sum(r.created for r in ordered),
            failed=sum(not r.ok for r in ordered),
            seconds=round(time.monotonic() - started, 3),
        )
        return ordered

    def _create_vm(self, ipr: Any, vpc: _Vpc, spec: VmSpec) -> VmResult:
        """Create one VM with the VPC namespace's socket `ipr`, or check the one that exists."""
        ns, host = self.vm_ns(spec.name), host_ifname(spec.name)
        if spec.vpc_id != vpc.vpc_id:
            return VmResult(spec.name, ok=False, error=f"vni {spec.vni} belongs to vpc {vpc.vpc_id}")
        if netns.exists(ns):
            try:
                state = _read_vm(ns)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    return VmResult(
                        spec.name, ok=False, error=f"cannot read the existing vm: {kernel.describe(exc)}"
                    )
                # The file of a namespace whose create was killed before its bind mount (setns
                # says it is not a namespace): a leftover, like a namespace without eth0.
                state = None
            except NetlinkError as exc:
                return VmResult(
                    spec.name, ok=False, error=f"cannot read the existing vm: {kernel.describe(exc)}"
                )
            if state is not None and _interrupted(state, spec):
                # A create killed half-way (the agent died): what it made is removed and made again.
                log.info("vm_rebuilt_after_interrupted_create", vhost=self.vhost_ns, vm=spec.name)
                self._undo_vm(ipr, ns, host)
                state = None
            if state is not None:
                differences = _differences(state, spec)
                link = vpc.links.get(host)
                if link is None or link.get("master") != vpc.bridge:
                    differences.append(f"vpc: its port is not on vni {spec.vni}")
                if differences:
                    return VmResult(
                        spec.name,
                        ok=False,
                        error="already exists with a different spec: " + "; ".join(differences),
                    )
                return VmResult(spec.name, ok=True, created=False)
            # A namespace without eth0 is what an interrupted create or a deleted VPC leaves.
            try:
                netns.remove(ns)
            except OSError as exc:
                return VmResult(
                    spec.name, ok=False, error=f"remove the leftover namespace: {kernel.describe(exc)}"
                )
        veth_made = False
        try:
            try:
                netns.create(ns)
            except OSError as exc:
                raise _VmStepError(f"create namespace {ns}: {kernel.describe(exc)}") from exc
            try:
                with kernel.ns_fd(ns) as fd:
                    # One message: host end on br0 and up, eth0 with the VM's MAC straight in the VM
                    # namespace (nothing in the root namespace), both at the overlay MTU.
                    ipr.link(
                        "add",
                        ifname=host,
                        kind="veth",
                        master=vpc.bridge,
                        mtu=vpc.mtu,
                        state="up",
                        peer={
                            "ifname": VM_IFNAME,
                            "net_ns_fd": fd,
                            "address": spec.mac.lower(),
                            "mtu": vpc.mtu,
                        },
                    )
            except (OSError, NetlinkError) as exc:
                raise _VmStepError(f"create veth {host}: {kernel.describe(exc)}") from exc
            veth_made = True
            self._configure_vm(ns, spec)
        except BaseException as exc:
            self._undo_vm(ipr, ns, host if veth_made else None)
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, _VmStepError):
                log.exception("vm_create_failed", vhost=self.vhost_ns, vm=spec.name)  # not a kernel refusal
            return VmResult(spec.name, ok=False, error=_error_text(exc))
        return VmResult(spec.name, ok=True, created=True)

    def _configure_vm(self, ns: str, spec: VmSpec) -> None:
        """Inside the VM namespace, with one socket: lo up, eth0 addressed and up, default route."""
        step = "enter the vm namespace"
        try:
            with netns.entered(ns):
                step = "open netlink"
                with IPRoute(groups=0) as ipr:
                    step = "set lo up"
                    ipr.link("set", index=1, state="up")
                    step = f"set {VM_IFNAME} up"
                    eth = ipr.link("get", ifname=VM_IFNAME)[0]["index"]
                    # No IPv6 link-local address, so no DAD, router or MLD solicitations flooded
                    # to every VTEP. Not the disable_ipv6 sysctl: a /proc/sys lookup walks every
                    # namespace's entry of the same name (~8 ms each once 10,000 VMs exist).
                    ipr.link(
                        "set", index=eth, ifalias=spec.vpc_id, state="up", IFLA_AF_SPEC=NO_IPV6_ADDRESSES
                    )
                    step = f"add address {spec.ip}/{spec.prefix_len}"
                    ipr.addr("add", index=eth, address=spec.ip, prefixlen=spec.prefix_len)
                    step = f"add default route via {spec.gateway}"
                    ipr.route("add", dst="0.0.0.0/0", gateway=spec.gateway, oif=eth)
        except (OSError, NetlinkError) as exc:
            raise _VmStepError(f"{step}: {kernel.describe(exc)}") from exc

    def _undo_vm(self, ipr: Any, ns: str, host: str | None) -> None:
        """Undo a failed create: the veth pair now (not when the namespace dies), then the namespace."""
        if host is not None:
            with contextlib.suppress(NetlinkError):
                link = kernel.link_or_none(ipr, host)
                if link is not None:
                    ipr.link("del", index=link["index"])
        with contextlib.suppress(OSError):
            netns.remove(ns)

    def delete_vms(self, names: Sequence[str]) -> list[VmResult]:
        """Delete the named VMs (veth pair, namespace); a missing VM is ok, `created` says it existed."""
        for name in names:
            check_vm_name(name)
        started = time.monotonic()
        errors: dict[str, str] = {}
        existed: set[str] = set()
        hosts = {host_ifname(name): name for name in names}
        with self._lock:
            # Deleting one end deletes the pair at once; the namespace alone would take it along
            # only when the kernel reaps the namespace, later.
            for ns in self._vpc_namespaces().values():
                try:
                    with kernel.ipr_in(ns) as ipr:
                        doomed = {
                            hosts[ifname]: int(link["index"])
                            for ifname, link in kernel.links(ipr).items()
                            if ifname in hosts and kernel.link_kind(link) == "veth"
                        }
                        for name, problem in kernel.delete_links(ipr, doomed).items():
                            errors[name] = f"delete veth {host_ifname(name)}: {problem}"
                except (OSError, NetlinkError) as exc:
                    log.warning("vpc_namespace_unreadable", namespace=ns, error=kernel.describe(exc))
            for name in names:
                try:
                    if netns.remove(self.vm_ns(name)):
                        existed.add(name)
                except OSError as exc:
                    errors.setdefault(name, f"remove namespace: {kernel.describe(exc)}")
        log.info(
            "vms_deleted",
            vhost=self.vhost_ns,
            requested=len(names),
            failed=len(errors),
            seconds=round(time.monotonic() - started, 3),
        )
        return [
            VmResult(name, ok=name not in errors, error=errors.get(name, ""), created=name in existed)
            for name in names
        ]

    def destroy(self) -> None:
        """Remove every namespace with this prefix: VMs first, then VPCs with their VXLAN devices."""
        with self._lock:
            self.delete_vms(self.list_vms())
            for ns in self._vpc_namespaces().values():
                self._remove_vpc_ns(ns)
            for ns in netns.list_names(f"{self.prefix}-"):
                netns.remove(ns)
        log.info("dataplane_destroyed", vhost=self.vhost_ns, prefix=self.prefix)

    # ------------------------------------------------------------------ overlay state

    def set_vni_peers(self, vni: int, vteps: Sequence[str]) -> None:
        """Make vx<vni>'s flood list (all-zero FDB entries, head-end replication) exactly `vteps`."""
        # Our own VTEP never belongs in the list: it would loop floods back to us.
        want = {str(check_ipv4("vtep", v)) for v in vteps} - {self.underlay_ip}
        with self._lock, self._vpc(vni) as (ipr, vpc):
            have = {
                str(e.get("dst"))
                for e in ipr.fdb("dump")
                if e["ifindex"] == vpc.vxlan and str(e.get("lladdr")) == ZERO_MAC and e.get("dst")
            }
            for vtep in sorted(want - have):
                ipr.fdb("append", ifindex=vpc.vxlan, lladdr=ZERO_MAC, dst=vtep)
            for vtep in sorted(have - want):
                with contextlib.suppress(NetlinkError):
                    ipr.fdb("del", ifindex=vpc.vxlan, lladdr=ZERO_MAC, dst=vtep)

    def push_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None:
        """Install each remote VM's neighbour entry on br0 and its FDB entries on vx<vni> (replacing)."""
        for neighbor in neighbors:
            validate_neighbor(neighbor)
        with self._lock, self._vpc(vni) as (_ipr, vpc):
            entries: list[netlink_bulk.Entry] = []
            for n in neighbors:
                mac = n.mac.lower()
                entries.append(netlink_bulk.neighbor(vpc.bridge, n.ip, mac))
                if n.vtep == self.underlay_ip:
                    continue  # a local VM: the bridge finds it on its port
                entries.append(netlink_bulk.fdb_remote(vpc.vxlan, mac, n.vtep))
                # Routed frames reach us with the anycast gateway MAC as source, so the bridge
                # never learns remote MACs; a static entry keeps it from flooding them locally.
                entries.append(netlink_bulk.fdb_static(vpc.vxlan, mac))
            # Three entries per remote VM, for every VM of the VPC: sent in bulk, not one by one.
            with netlink_bulk.route_socket(self.vpc_ns(vni)) as sock:
                failed = netlink_bulk.apply(sock, entries)
            if failed:
                entry, reason = failed[0]
                raise OSError(
                    f"{len(failed)} neighbour/fdb entries refused, e.g. {entry.lladdr} {entry.dst}: {reason}"
                )

    def remove_neighbors(self, vni: int, neighbors: Sequence[Neighbor]) -> None:
        """Remove what `push_neighbors` installed for these VMs; entries of a VM now at another VTEP stay."""
        for neighbor in neighbors:
            validate_neighbor(neighbor)
        with self._lock, self._vpc(vni) as (ipr, vpc):
            arp = {
                (str(e.get("dst")), str(e.get("lladdr")).lower())
                for e in ipr.neigh("dump", family=socket.AF_INET)
                if e["ifindex"] == vpc.bridge
            }
            remote: dict[str, str] = {}
            static: set[str] = set()
            for e in ipr.fdb("dump"):
                if e["ifindex"] != vpc.vxlan:
                    continue
                mac = str(e.get("lladdr")).lower()
                if e.get("master"):  # the bridge's entry for this port (NDA_MASTER), not vxlan's own
                    static.add(mac)
                elif e.get("dst") and mac != ZERO_MAC:
                    remote[mac] = str(e.get("dst"))
            for n in neighbors:
                mac = n.mac.lower()
                if n.vtep != self.underlay_ip and remote.get(mac, n.vtep) != n.vtep:
                    continue  # pushed again since, at its new VTEP
                if (n.ip, mac) in arp:
                    with contextlib.suppress(NetlinkError):
                        ipr.neigh("del", ifindex=vpc.bridge, dst=n.ip, lladdr=mac)
                if mac in remote:
                    with contextlib.suppress(NetlinkError):
                        ipr.fdb("del", ifindex=vpc.vxlan, lladdr=mac, dst=n.vtep)
                if mac in static:
                    with contextlib.suppress(NetlinkError):
                        ipr.fdb("del", ifindex=vpc.vxlan, lladdr=mac, state=NUD_NOARP, flags=NTF_MASTER)

    # ------------------------------------------------------------------ checks

    def ping(
        self,
        vm_name: str,
        dests: Sequence[str],
        timeout: float = 1.0,
        count: int = 1,
        *,
        retries: int = 0,
        interval: float = 0.2,
        size: int = 56,
    ) -> list[PingResult]:
        """ICMP echo from inside VM `vm_name` to every dest at once; see `ping_from`."""
        check_vm_name(vm_name)
        ns = self.vm_ns(vm_name)
        if not netns.exists(ns):
            raise NotFound(f"vm {vm_name} does not exist on {self.vhost_ns}")
        return ping_from(
            ns, dests, timeout=timeout, count=count, retries=retries, interval=interval, size=size
        )


def _error_text(exc: BaseException) -> str:
    """The error text of a VmResult."""
    if isinstance(exc, _VmStepError | FailedPrecondition):
        return str(exc)
    return kernel.describe(exc)


def _read_vm(ns: str) -> _VmState | None:
    """eth0's address, MAC, default gateway and VPC id inside `ns`; None when there is no eth0."""
    with netns.entered(ns), IPRoute(groups=0) as ipr:
        eth = kernel.link_or_none(ipr, VM_IFNAME)
        if eth is None:
            return None
        addrs = sorted(kernel.ipv4_addrs(ipr, eth["index"]))
        gateways = [
            str(r.get("gateway"))
            for r in ipr.route("dump", family=socket.AF_INET)
            if r["dst_len"] == 0 and r.get("table") == MAIN_TABLE and r.get("gateway")
        ]
    ip, prefix_len = addrs[0] if addrs else ("", 0)
    return _VmState(
        ip=ip,
        prefix_len=prefix_len,
        mac=str(eth.get("address")).lower(),
        gateway=gateways[0] if gateways else "",
        vpc_id=str(eth.get("ifalias") or ""),
    )


def _interrupted(state: _VmState, spec: VmSpec) -> bool:
    """The VM is one whose create stopped before its last step (the default route), and what it has
    so far is the spec's: the same MAC, and an address and VPC that are the spec's or not set yet."""
    return (
        not state.gateway
        and state.mac == spec.mac.lower()
        and state.ip in ("", spec.ip)
        and state.vpc_id in ("", spec.vpc_id)
    )


def _differences(state: _VmState, spec: VmSpec) -> list[str]:
    """What differs between an existing VM and `spec`, one text per field."""
    out: list[str] = []
    if (state.ip, state.prefix_len) != (spec.ip, spec.prefix_len):
        out.append(f"ip {state.ip}/{state.prefix_len} != {spec.ip}/{spec.prefix_len}")
    if state.mac != spec.mac.lower():
        out.append(f"mac {state.mac} != {spec.mac.lower()}")
    if state.gateway != spec.gateway:
        out.append(f"gateway {state.gateway or '-'} != {spec.gateway}")
    if state.vpc_id != spec.vpc_id:
        out.append(f"vpc {state.vpc_id or '-'} != {spec.vpc_id}")
    return out
