"""The native data plane of one vhost (DESIGN §5): VPC namespaces with a bridge and VXLAN, VMs as namespaces.

Synchronous and fork-free: every call moves only the calling thread between namespaces with
`merak.netns`, so call it from worker threads, never from an event loop's thread. Netlink goes
through pyroute2; each `IPRoute` is created while the thread is inside the namespace it serves
and is used and closed by that same thread (its socket stays in that namespace).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
import re
import secrets
import select
import socket
import struct
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
from services.agent import netlink_bulk
from services.agent.models import Neighbor, PingResult, VmResult, VmSpec, VpcSpec

log = get_logger(__name__)

BRIDGE = "br0"
VM_IFNAME = "eth0"
VXLAN_PORT = 4789
ZERO_MAC = "00:00:00:00:00:00"
MAX_VNI = (1 << 24) - 1
MAX_IFNAME = 15  # IFNAMSIZ - 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
VPC_NS_RE = re.compile(r"^vpc([0-9]+)$")
VPC_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAIN_TABLE = 254
# linux/neighbour.h and linux/if.h; pyroute2 has them too but untyped.
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
NTF_MASTER = 0x04
# A link group (IFLA_GROUP) no one else uses, to delete many devices in one batch.
DOOMED_GROUP = 0x4D4B
ICMP_ECHO_REPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO_REQUEST = 8
ICMP_TIME_EXCEEDED = 11


# ----------------------------------------------------------------------------- validation


def _check_name(what: str, name: object) -> str:
    """`name` if it is a valid VM name or prefix, else ValueError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"{what}: {name!r} is not a valid name (1-32 of a-z, 0-9 and '-', not starting with '-')"
        )
    return name


def _check_vm_name(name: object) -> str:
    """`name` if it is a valid VM name (one that cannot pass for a VPC namespace), else ValueError."""
    name = _check_name("vm name", name)
    if VPC_NS_RE.match(name):
        raise ValueError(f"vm name: {name!r} is reserved for VPC namespaces (vpc<vni>)")
    return name


def _check_ipv4(what: str, value: object) -> ipaddress.IPv4Address:
    """`value` parsed as a dotted IPv4 address, else ValueError."""
    try:
        if isinstance(value, str):
            return ipaddress.IPv4Address(value)
    except ValueError:
        pass
    raise ValueError(f"{what}: {value!r} is not an IPv4 address")


def _check_mac(what: str, value: object) -> str:
    """`value` lower-cased if it is a unicast MAC address, else ValueError."""
    mac = value.lower() if isinstance(value, str) else ""
    if not MAC_RE.match(mac):
        raise ValueError(f"{what}: {value!r} is not a MAC address (xx:xx:xx:xx:xx:xx)")
    if mac == ZERO_MAC or int(mac[:2], 16) & 1:
        raise ValueError(f"{what}: {value!r} is not a unicast MAC address")
    return mac


def _check_vni(what: str, vni: object) -> int:
    """`vni` if it is a 24-bit VXLAN network identifier, else ValueError."""
    if not isinstance(vni, int) or isinstance(vni, bool) or not 1 <= vni <= MAX_VNI:
        raise ValueError(f"{what}: {vni!r} is not a VNI (1..{MAX_VNI})")
    return vni


def _check_vpc_id(what: str, vpc_id: object) -> str:
    """`vpc_id` if it is usable as an interface alias, else ValueError."""
    if not isinstance(vpc_id, str) or not VPC_ID_RE.match(vpc_id):
        raise ValueError(f"{what}: {vpc_id!r} is not a VPC id (1-128 of A-Z, a-z, 0-9, '.', '_', ':', '-')")
    return vpc_id


def validate_vpc(vpc: VpcSpec) -> None:
    """Raise ValueError naming the first malformed field of `vpc`."""
    _check_vpc_id("vpc_id", vpc.vpc_id)
    _check_vni("vni", vpc.vni)
    _check_mac("gateway_mac", vpc.gateway_mac)
    networks: list[ipaddress.IPv4Network] = []
    for i, subnet in enumerate(vpc.subnets):
        try:
            net = ipaddress.IPv4Network(subnet.cidr, strict=True)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"subnets[{i}].cidr: {subnet.cidr!r} is not an IPv4 network ({exc})") from None
        gateway = _check_ipv4(f"subnets[{i}].gateway", subnet.gateway)
        if gateway not in net or (
            net.prefixlen <= 30 and gateway in (net.network_address, net.broadcast_address)
        ):
            raise ValueError(f"subnets[{i}].gateway: {subnet.gateway} is not a host address of {net}")
        for other in networks:
            if net.overlaps(other):
                raise ValueError(f"subnets[{i}].cidr: {net} overlaps {other}")
        networks.append(net)


def validate_vm(vm: VmSpec) -> None:
    """Raise ValueError naming the first malformed field of `vm`."""
    _check_vm_name(vm.name)
    where = f"vm {vm.name}"
    _check_vpc_id(f"{where}: vpc_id", vm.vpc_id)
    _check_vni(f"{where}: vni", vm.vni)
    ip = _check_ipv4(f"{where}: ip", vm.ip)
    if not isinstance(vm.prefix_len, int) or isinstance(vm.prefix_len, bool) or not 1 <= vm.prefix_len <= 31:
        raise ValueError(f"{where}: prefix_len: {vm.prefix_len!r} is not in 1..31")
    _check_mac(f"{where}: mac", vm.mac)
    gateway = _check_ipv4(f"{where}: gateway", vm.gateway)
    net = ipaddress.IPv4Network(f"{ip}/{vm.prefix_len}", strict=False)
    if vm.prefix_len <= 30 and ip in (net.network_address, net.broadcast_address):
        raise ValueError(f"{where}: ip: {ip} is not a host address of {net}")
    if gateway not in net or gateway == ip:
        raise ValueError(f"{where}: gateway: {gateway} is not another address of {net}")


def validate_neighbor(neighbor: Neighbor) -> None:
    """Raise ValueError naming the first malformed field of `neighbor`."""
    _check_ipv4("neighbor ip", neighbor.ip)
    _check_mac(f"neighbor {neighbor.ip}: mac", neighbor.mac)
    _check_ipv4(f"neighbor {neighbor.ip}: vtep", neighbor.vtep)


def host_ifname(vm_name: str) -> str:
    """The VM's veth end in the VPC namespace: "t<name>", or "h<hash>" when that would not fit IFNAMSIZ."""
    if len(vm_name) + 1 <= MAX_IFNAME:
        return f"t{vm_name}"
    # A different first letter keeps hashed names apart from literal ones.
    return "h" + hashlib.sha256(vm_name.encode()).hexdigest()[: MAX_IFNAME - 1]


# ----------------------------------------------------------------------------- kernel helpers


def _set_sysctl(path: str, value: str, *, optional: bool = False) -> None:
    """Write /proc/sys/<path> for the calling thread's network namespace (call it inside `entered()`)."""
    # The kernel resolves /proc/sys/net against the namespace of the task that opens the file:
    # this thread after setns, not the process (checked by test_proc_sys_net_*).
    try:
        with open(f"/proc/sys/{path}", "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not optional:
            raise


def _open_ipr(ns: str) -> Any:
    """An IPRoute whose netlink socket lives in namespace `ns`; only this thread may use it."""
    with netns.entered(ns):
        # groups=0: no multicast subscription, so a long batch does not queue every notification.
        return IPRoute(groups=0)


@contextlib.contextmanager
def _ipr_in(ns: str) -> Iterator[Any]:
    """`_open_ipr` for the block, closed after."""
    ipr = _open_ipr(ns)
    try:
        yield ipr
    finally:
        ipr.close()


@contextlib.contextmanager
def _ns_fd(ns: str) -> Iterator[int]:
    """An fd of namespace `ns` for IFLA_NET_NS_FD, closed after the block."""
    fd = os.open(netns.path_of(ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _kind(link: Any) -> str:
    """The link's kind ("veth", "bridge", "vxlan"), "" when it has none."""
    kind = link.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    return str(kind) if kind else ""


def _links(ipr: Any) -> dict[str, Any]:
    """Every link of the socket's namespace by name."""
    return {str(link.get("ifname")): link for link in ipr.link("dump")}


def _link_or_none(ipr: Any, ifname: str) -> Any:
    """The link named `ifname`, None when there is none."""
    try:
        return ipr.link("get", ifname=ifname)[0]
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise


def _ipv4_addrs(ipr: Any, index: int) -> set[tuple[str, int]]:
    """(address, prefix length) of every IPv4 address on link `index`."""
    return {
        (str(a.get("address")), int(a["prefixlen"]))
        for a in ipr.addr("dump", family=socket.AF_INET)
        if a["index"] == index
    }


def _delete_links(ipr: Any, links: dict[str, int]) -> dict[str, str]:
    """Delete links (name -> index) in one kernel batch; returns name -> problem for the ones that stay."""
    # Deleting one device waits for an RCU grace period (~20 ms here); moving the devices into one
    # group and deleting the group unregisters them all behind a single one.
    problems: dict[str, str] = {}
    if not links:
        return problems
    try:
        for index in links.values():
            ipr.link("set", index=index, group=DOOMED_GROUP)
        ipr.link("del", group=DOOMED_GROUP)
        return problems
    except NetlinkError:
        pass  # a device without rtnl dellink refuses the group delete: one by one then
    for name, index in links.items():
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                problems[name] = _describe(exc)
    return problems


def _describe(exc: BaseException) -> str:
    """A short human text for a netlink or OS error."""
    if isinstance(exc, NetlinkError):
        return f"{os.strerror(exc.code) if exc.code > 0 else 'netlink error'} ({exc})"
    return str(exc) or type(exc).__name__


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
        _check_name("prefix", prefix)
        _check_ipv4("underlay_ip", underlay_ip)
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
            _set_sysctl("net/ipv6/conf/all/disable_ipv6", "1", optional=True)
            _set_sysctl("net/ipv6/conf/default/disable_ipv6", "1", optional=True)
            _set_sysctl("net/ipv4/ip_forward", "1")
            ipr = IPRoute(groups=0)
        with contextlib.closing(ipr):
            ipr.link("set", index=1, state="up")
            links = _links(ipr)
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
            have = _ipv4_addrs(ipr, br)
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

    def _create_vxlan(self, ns: str, vni: int) -> None:
        """Create vx<vni> from the vhost namespace straight into the VPC namespace `ns`."""
        # Asked for by a socket of the vhost namespace, the device's UDP socket and underlay stay
        # there (its link netns) while the device sits in `ns` (IFLA_NET_NS_FD): what create-then-
        # move gives, in one message, so a failure cannot leave it behind in the vhost namespace.
        with _ns_fd(ns) as fd, netns.entered(self.vhost_ns), IPRoute(groups=0) as ipr:
            dev = _link_or_none(ipr, self.underlay_dev)
            if dev is None:
                raise FailedPrecondition(f"underlay device {self.underlay_dev} is not in {self.vhost_ns}")
            if self.underlay_ip not in {address for address, _ in _ipv4_addrs(ipr, dev["index"])}:
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
        if _kind(vx) != "vxlan" or got != (vni, self.underlay_ip, VXLAN_PORT):
            raise FailedPrecondition(
                f"vx{vni} exists with (vni, local, port) {got}, want {(vni, self.underlay_ip, VXLAN_PORT)}"
            )

    def _load_vpc(self, ipr: Any, ns: str, vni: int) -> _Vpc:
        """Read br0, vx<vni> and every link of the VPC namespace with one dump."""
        links = _links(ipr)
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
        _check_vni("vni", vni)
        ns = self.vpc_ns(vni)
        if not netns.exists(ns):
            raise FailedPrecondition(f"vpc with vni {vni} is not ensured on {self.vhost_ns}")
        with _ipr_in(ns) as ipr:
            yield ipr, self._load_vpc(ipr, ns, vni)

    def _remove_vpc_ns(self, ns: str) -> None:
        """Delete the VPC namespace's devices, then the namespace."""
        # Deleting vx<vni> explicitly frees its VNI and UDP socket in the vhost namespace now; a
        # namespace only goes away when its last reference does, later, in a kernel worker.
        with contextlib.suppress(OSError, NetlinkError), _ipr_in(ns) as ipr:
            _delete_links(
                ipr, {name: int(link["index"]) for name, link in _links(ipr).items() if name != "lo"}
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
            except (OSError, NetlinkError) as exc:
                return VmResult(spec.name, ok=False, error=f"cannot read the existing vm: {_describe(exc)}")
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
                return VmResult(spec.name, ok=False, error=f"remove the leftover namespace: {_describe(exc)}")
        veth_made = False
        try:
            try:
                netns.create(ns)
            except OSError as exc:
                raise _VmStepError(f"create namespace {ns}: {_describe(exc)}") from exc
            try:
                with _ns_fd(ns) as fd:
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
                raise _VmStepError(f"create veth {host}: {_describe(exc)}") from exc
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
                step = "disable ipv6"
                _set_sysctl("net/ipv6/conf/all/disable_ipv6", "1", optional=True)
                step = "open netlink"
                with IPRoute(groups=0) as ipr:
                    step = "set lo up"
                    ipr.link("set", index=1, state="up")
                    step = f"set {VM_IFNAME} up"
                    eth = ipr.link("get", ifname=VM_IFNAME)[0]["index"]
                    ipr.link("set", index=eth, ifalias=spec.vpc_id, state="up")
                    step = f"add address {spec.ip}/{spec.prefix_len}"
                    ipr.addr("add", index=eth, address=spec.ip, prefixlen=spec.prefix_len)
                    step = f"add default route via {spec.gateway}"
                    ipr.route("add", dst="0.0.0.0/0", gateway=spec.gateway, oif=eth)
        except (OSError, NetlinkError) as exc:
            raise _VmStepError(f"{step}: {_describe(exc)}") from exc

    def _undo_vm(self, ipr: Any, ns: str, host: str | None) -> None:
        """Undo a failed create: the veth pair now (not when the namespace dies), then the namespace."""
        if host is not None:
            with contextlib.suppress(NetlinkError):
                link = _link_or_none(ipr, host)
                if link is not None:
                    ipr.link("del", index=link["index"])
        with contextlib.suppress(OSError):
            netns.remove(ns)

    def delete_vms(self, names: Sequence[str]) -> list[VmResult]:
        """Delete the named VMs (veth pair, namespace); a missing VM is ok, `created` says it existed."""
        for name in names:
            _check_vm_name(name)
        started = time.monotonic()
        errors: dict[str, str] = {}
        existed: set[str] = set()
        hosts = {host_ifname(name): name for name in names}
        with self._lock:
            # Deleting one end deletes the pair at once; the namespace alone would take it along
            # only when the kernel reaps the namespace, later.
            for ns in self._vpc_namespaces().values():
                try:
                    with _ipr_in(ns) as ipr:
                        doomed = {
                            hosts[ifname]: int(link["index"])
                            for ifname, link in _links(ipr).items()
                            if ifname in hosts and _kind(link) == "veth"
                        }
                        for name, problem in _delete_links(ipr, doomed).items():
                            errors[name] = f"delete veth {host_ifname(name)}: {problem}"
                except (OSError, NetlinkError) as exc:
                    log.warning("vpc_namespace_unreadable", namespace=ns, error=_describe(exc))
            for name in names:
                try:
                    if netns.remove(self.vm_ns(name)):
                        existed.add(name)
                except OSError as exc:
                    errors.setdefault(name, f"remove namespace: {_describe(exc)}")
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
        want = {str(_check_ipv4("vtep", v)) for v in vteps} - {self.underlay_ip}
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
        _check_vm_name(vm_name)
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
    return _describe(exc)


def _read_vm(ns: str) -> _VmState | None:
    """eth0's address, MAC, default gateway and VPC id inside `ns`; None when there is no eth0."""
    with netns.entered(ns), IPRoute(groups=0) as ipr:
        eth = _link_or_none(ipr, VM_IFNAME)
        if eth is None:
            return None
        addrs = sorted(_ipv4_addrs(ipr, eth["index"]))
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


# ----------------------------------------------------------------------------- ping


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    """An ICMP echo request with its checksum."""
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    checksum = _checksum(header + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum, ident, seq) + payload


@dataclass(slots=True)
class _Probe:
    """The state of pinging one destination."""

    dest: str
    sent: int = 0
    next_send: float = 0.0
    last_send: float = 0.0
    rtts: list[float] = field(default_factory=list)
    error: str = ""


def ping_from(
    ns: str,
    dests: Sequence[str],
    *,
    timeout: float = 1.0,
    count: int = 1,
    retries: int = 0,
    interval: float = 0.2,
    size: int = 56,
) -> list[PingResult]:
    """ICMP echo from inside namespace `ns` to every dest in parallel, through one raw socket."""
    # Each dest gets up to `count + retries` requests, `interval` seconds apart, until `count`
    # replies arrived (ok); it fails once the requests are used up and `timeout` has passed since
    # the last one. A reply to any earlier request counts, so a port that starts passing late is
    # caught without a blind sleep. A request the kernel refuses to send (no route) is not waited for.
    addresses = [str(_check_ipv4("dest", d)) for d in dests]
    if count < 1 or retries < 0 or timeout <= 0 or interval < 0 or not 0 <= size <= 65000:
        raise ValueError(
            f"ping: need count >= 1, retries >= 0, timeout > 0, interval >= 0, 0 <= size <= 65000; "
            f"got {count}, {retries}, {timeout}, {interval}, {size}"
        )
    attempts = count + retries
    probes = {address: _Probe(address) for address in addresses}
    with netns.entered(ns):
        # The socket belongs to the namespace it was opened in, whatever the thread does next.
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with sock:
        sock.setblocking(False)
        ident = secrets.randbits(16)
        payload = bytes(i & 0xFF for i in range(size))
        outstanding: dict[int, tuple[_Probe, float]] = {}
        seq = 0
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while True:
            now = time.monotonic()
            waits: list[float] = []
            for probe in probes.values():
                if len(probe.rtts) >= count:
                    continue
                if probe.sent < attempts and now >= probe.next_send:
                    seq = (seq + 1) & 0xFFFF
                    probe.sent += 1
                    probe.last_send = now
                    probe.next_send = now + interval
                    try:
                        sock.sendto(_echo_request(ident, seq, payload), (probe.dest, 0))
                        outstanding[seq] = (probe, now)
                    except OSError as exc:
                        probe.error = exc.strerror or str(exc)
                        probe.last_send = now - timeout  # nothing left to wait for from this one
                if probe.sent < attempts:
                    waits.append(probe.next_send)
                elif now < probe.last_send + timeout:
                    waits.append(probe.last_send + timeout)
            if not waits:
                break
            delay = max(0.0, min(waits) - time.monotonic())
            if poller.poll(delay * 1000.0):
                _drain(sock, ident, outstanding)
    results: list[PingResult] = []
    for address in addresses:
        probe = probes[address]
        rtt = round(sum(probe.rtts) / len(probe.rtts), 3) if probe.rtts else None
        if len(probe.rtts) >= count:
            results.append(PingResult(address, ok=True, rtt_ms=rtt))
            continue
        error = probe.error or f"no reply within {timeout}s of the last of {probe.sent} requests"
        if probe.rtts:
            error = f"{len(probe.rtts)} of {count} replies; {error}"
        results.append(PingResult(address, ok=False, rtt_ms=rtt, error=error))
    return results


def _drain(sock: socket.socket, ident: int, outstanding: dict[int, tuple[_Probe, float]]) -> None:
    """Read every datagram waiting on the raw socket and credit replies and errors to their probes."""
    while True:
        try:
            packet, (source, _) = sock.recvfrom(65535)
        except BlockingIOError:
            return
        received = time.monotonic()
        ihl = (packet[0] & 0x0F) * 4
        icmp = packet[ihl:]
        if len(icmp) < 8:
            continue
        kind, code = icmp[0], icmp[1]
        if kind == ICMP_ECHO_REPLY:
            _, _, _, reply_id, reply_seq = struct.unpack("!BBHHH", icmp[:8])
            entry = outstanding.get(reply_seq)
            if reply_id == ident and entry is not None and entry[0].dest == source:
                probe, sent_at = entry
                del outstanding[reply_seq]
                probe.rtts.append((received - sent_at) * 1000.0)
        elif kind in (ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED) and len(icmp) >= 8 + 20 + 8:
            # The error quotes our request: its IP header, then the first 8 bytes of the echo.
            inner = icmp[8:]
            inner_ihl = (inner[0] & 0x0F) * 4
            quoted = inner[inner_ihl : inner_ihl + 8]
            if len(quoted) < 8:
                continue
            q_type, _, _, q_id, q_seq = struct.unpack("!BBHHH", quoted)
            entry = outstanding.get(q_seq)
            if q_type == ICMP_ECHO_REQUEST and q_id == ident and entry is not None:
                what = "destination unreachable" if kind == ICMP_DEST_UNREACH else "time exceeded"
                entry[0].error = f"{what} (code {code}) from {source}"
