"""A vhost's VMs: namespaces `<prefix>-<vm>` whose eth0 is the peer of a veth port on their VPC's br0, or,
for a VM on an OVN port, of a veth left in the vhost's namespace for the chassis's br-int (the agent plugs
it: services/agent/ovn)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from merak import netns, rtnl
from merak.errors import FailedPrecondition
from merak.logs import get_logger
from services.agent import kernel
from services.agent.models import VmInfo, VmResult, VmSpec
from services.agent.planes.real.vpcs import VpcNamespaces
from services.agent.validation import NAME_RE, VPC_NS_RE, host_ifname

log = get_logger(__name__)

VM_IFNAME = "eth0"
MAIN_TABLE = 254
# A VM behind OVN's geneve on a 1500-byte underlay (58 bytes of headers, and OVS sends no
# "fragmentation needed" back: a bigger MTU stalls bulk TCP).
OVN_VM_MTU = 1400
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
# IFLA_AF_SPEC of a link without IPv6 addresses (addrgenmode none: IN6_ADDR_GEN_MODE_NONE).
NO_IPV6_ADDRESSES = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]}


@dataclass(frozen=True, slots=True)
class Attachment:
    """Where a VM's host-side veth goes: its VPC's bridge, or the vhost's namespace for br-int (OVN)."""

    vpc_id: str | None  # the VPC the VNI belongs to (None: not checked, OVN)
    master: int | None  # the bridge's index (None: no bridge)
    mtu: int
    links: dict[str, Any]
    sock: socket.socket  # a raw rtnetlink socket in the namespace the host end goes to


@dataclass(frozen=True, slots=True)
class VmState:
    """What a VM namespace's eth0 is configured with."""

    ip: str
    prefix_len: int
    mac: str
    gateway: str
    vpc_id: str


class VmStepError(Exception):
    """A step of building one VM failed; the message names the step."""


class VmNamespaces:
    """The VM namespaces of one vhost and their veth pairs; the caller checks the specs and serializes
    changes."""

    def __init__(self, vhost_ns: str, prefix: str, vpcs: VpcNamespaces) -> None:
        self.vhost_ns = vhost_ns
        self.prefix = prefix
        self._vpcs = vpcs

    def ns_of(self, vm_name: str) -> str:
        """The namespace of VM `vm_name`."""
        return f"{self.prefix}-{vm_name}"

    def names(self) -> list[str]:
        """Names of the VMs present on this vhost."""
        # Namespaces are the only record, so two instances whose prefixes extend each other by
        # "-..." ("mk-1" and "mk-1-h0") would see each other's VMs: the caller keeps them apart.
        start = len(self.prefix) + 1
        return [
            ns[start:]
            for ns in netns.list_names(f"{self.prefix}-")
            if NAME_RE.match(ns[start:]) and not VPC_NS_RE.match(ns[start:])
        ]

    def describe(self, name: str) -> VmInfo | None:
        """The VM's address, MAC and VPC as its namespace holds them (None: no such VM)."""
        ns = self.ns_of(name)
        if not netns.exists(ns):
            return None
        state = read_vm(ns)
        return None if state is None else VmInfo(state.ip, state.mac, state.vpc_id)

    def addresses_on(self, vni: int) -> list[str]:
        """The IPv4 addresses of the VMs whose port is on the bridge of VPC `vni` (read from each VM's
        namespace: the kernel is the record)."""
        with self._vpcs.opened(vni) as (_ipr, vpc):
            ports = {name for name, link in vpc.links.items() if link.get("master") == vpc.bridge}
        found: list[str] = []
        for name in self.names():
            if host_ifname(name) not in ports:
                continue
            try:
                state = read_vm(self.ns_of(name))
            except (OSError, NetlinkError):
                continue  # deleted meanwhile, or a create half-way: it has no address to route yet
            if state is not None and state.ip:
                found.append(state.ip)
        return found

    def create(self, specs: Sequence[VmSpec]) -> dict[str, VmResult]:
        """Create the VMs that do not exist, one VPC socket per VNI; a result per VM name."""
        results: dict[str, VmResult] = {}
        groups: dict[int, list[VmSpec]] = {}
        on_ovn = [spec for spec in specs if spec.ovn_port]
        for spec in specs:
            if not spec.ovn_port:
                groups.setdefault(spec.vni, []).append(spec)
        for vni, group in groups.items():
            try:
                with self._vpcs.opened(vni) as (ipr, vpc), rtnl.socket_in(self._vpcs.ns_of(vni)) as sock:
                    attach = Attachment(vpc.vpc_id, vpc.bridge, vpc.mtu, vpc.links, sock)
                    for spec in group:
                        results[spec.name] = self._create_one(ipr, attach, spec)
            except (FailedPrecondition, OSError, NetlinkError) as exc:
                for spec in group:
                    results.setdefault(spec.name, VmResult(spec.name, ok=False, error=error_text(exc)))
        if on_ovn:
            try:
                with kernel.ipr_in(self.vhost_ns) as ipr, rtnl.socket_in(self.vhost_ns) as sock:
                    attach = Attachment(None, None, OVN_VM_MTU, kernel.links(ipr), sock)
                    for spec in on_ovn:
                        results[spec.name] = self._create_one(ipr, attach, spec)
            except (OSError, NetlinkError) as exc:
                for spec in on_ovn:
                    results.setdefault(spec.name, VmResult(spec.name, ok=False, error=error_text(exc)))
        return results

    def delete(self, names: Sequence[str]) -> tuple[dict[str, str], set[str]]:
        """Delete the named VMs (veth pair, namespace): the errors by VM, and the VMs that existed."""
        errors: dict[str, str] = {}
        existed: set[str] = set()
        hosts = {host_ifname(name): name for name in names}
        # Deleting one end deletes the pair at once; the namespace alone would take it along
        # only when the kernel reaps the namespace, later. A VM on an OVN port has its end in the
        # vhost's namespace.
        for ns in [*self._vpcs.by_vni().values(), self.vhost_ns]:
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
                if netns.remove(self.ns_of(name)):
                    existed.add(name)
            except OSError as exc:
                errors.setdefault(name, f"remove namespace: {kernel.describe(exc)}")
        return errors, existed

    def _create_one(self, ipr: Any, vpc: Attachment, spec: VmSpec) -> VmResult:
        """Create one VM with the socket `ipr` of the namespace its host end goes to, or check the one
        that exists."""
        ns, host = self.ns_of(spec.name), host_ifname(spec.name)
        if vpc.vpc_id is not None and spec.vpc_id != vpc.vpc_id:
            return VmResult(spec.name, ok=False, error=f"vni {spec.vni} belongs to vpc {vpc.vpc_id}")
        if netns.exists(ns):
            try:
                state = read_vm(ns)
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
                self._undo(ipr, ns, host)
                state = None
            if state is not None:
                differences = _differences(state, spec)
                link = vpc.links.get(host)
                if link is None or link.get("master") != vpc.master:
                    where = f"vni {spec.vni}" if vpc.master is not None else "the vhost (for br-int)"
                    differences.append(f"vpc: its port is not on {where}")
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
                raise VmStepError(f"create namespace {ns}: {kernel.describe(exc)}") from exc
            try:
                with kernel.ns_fd(ns) as fd:
                    # One message: host end on br0 and up, eth0 with the VM's MAC straight in the VM
                    # namespace (nothing in the root namespace), both at the overlay MTU.
                    rtnl.check(
                        vpc.sock,
                        [
                            rtnl.veth(
                                host,
                                mtu=vpc.mtu,
                                master=vpc.master,
                                peer=VM_IFNAME,
                                peer_netns_fd=fd,
                                peer_mac=spec.mac.lower(),
                            )
                        ],
                    )
            except rtnl.RtnlError as exc:
                raise VmStepError(str(exc)) from exc
            except OSError as exc:
                raise VmStepError(f"create veth {host}: {kernel.describe(exc)}") from exc
            veth_made = True
            self._configure(ns, spec)
        except BaseException as exc:
            self._undo(ipr, ns, host if veth_made else None)
            if not isinstance(exc, Exception):
                raise
            if not isinstance(exc, VmStepError):
                log.exception("vm_create_failed", vhost=self.vhost_ns, vm=spec.name)  # not a kernel refusal
            return VmResult(spec.name, ok=False, error=error_text(exc))
        return VmResult(spec.name, ok=True, created=True)

    def _configure(self, ns: str, spec: VmSpec) -> None:
        """Inside the VM namespace, in one write to one socket: lo up, eth0 addressed and up, default
        route."""
        step = "enter the vm namespace"
        try:
            with netns.entered(ns):
                step = "open netlink"
                with rtnl.route_socket() as sock:
                    step = f"find {VM_IFNAME}"
                    eth = socket.if_nametoindex(VM_IFNAME)
                    if spec.ovn_port:
                        # TCP through OVS's userspace datapath needs the checksums done in the VM.
                        step = f"turn off {VM_IFNAME}'s TX checksum offload"
                        tx_checksum_off(VM_IFNAME)
                    step = "configure the vm"
                    rtnl.check(
                        sock,
                        [
                            rtnl.link_set(1, "set lo up"),
                            # No IPv6 link-local address, so no DAD, router or MLD solicitations
                            # flooded to every VTEP. Not the disable_ipv6 sysctl: a /proc/sys lookup
                            # walks every namespace's entry of the same name (~8 ms each once 10,000
                            # VMs exist).
                            rtnl.link_set(
                                eth,
                                f"set {VM_IFNAME} alias",
                                up=False,
                                alias=spec.vpc_id,
                                no_ipv6_addresses=True,
                            ),
                            rtnl.link_set(eth, f"set {VM_IFNAME} up"),
                            rtnl.address(eth, spec.ip, spec.prefix_len),
                            rtnl.default_route(spec.gateway, eth),
                        ],
                    )
        except rtnl.RtnlError as exc:
            raise VmStepError(str(exc)) from exc
        except (OSError, NetlinkError) as exc:
            raise VmStepError(f"{step}: {kernel.describe(exc)}") from exc

    def _undo(self, ipr: Any, ns: str, host: str | None) -> None:
        """Undo a failed create: the veth pair now (not when the namespace dies), then the namespace."""
        if host is not None:
            with contextlib.suppress(NetlinkError):
                link = kernel.link_or_none(ipr, host)
                if link is not None:
                    ipr.link("del", index=link["index"])
        with contextlib.suppress(OSError):
            netns.remove(ns)


def tx_checksum_off(ifname: str) -> None:
    """`ethtool -K <ifname> tx off` in the calling thread's namespace (the kernel turns off what
    depends on it, TSO included), with the ethtool ioctl instead of a process per VM."""
    value = (ctypes.c_uint32 * 2)(ETHTOOL_STXCSUM, 0)
    request = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)


def error_text(exc: BaseException) -> str:
    """The error text of a VmResult."""
    if isinstance(exc, VmStepError | FailedPrecondition):
        return str(exc)
    return kernel.describe(exc)


def read_vm(ns: str) -> VmState | None:
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
    return VmState(
        ip=ip,
        prefix_len=prefix_len,
        mac=str(eth.get("address")).lower(),
        gateway=gateways[0] if gateways else "",
        vpc_id=str(eth.get("ifalias") or ""),
    )


def _interrupted(state: VmState, spec: VmSpec) -> bool:
    """The VM is one whose create stopped before its last step (the default route), and what it has
    so far is the spec's: the same MAC, and an address and VPC that are the spec's or not set yet."""
    return (
        not state.gateway
        and state.mac == spec.mac.lower()
        and state.ip in ("", spec.ip)
        and state.vpc_id in ("", spec.vpc_id)
    )


def _differences(state: VmState, spec: VmSpec) -> list[str]:
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
