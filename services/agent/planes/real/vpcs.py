"""A vhost's VPC namespaces `<prefix>-vpc<vni>`: br0 with the anycast gateways, forwarding, and vx<vni>
whose UDP socket stays in the vhost namespace.

Two shapes (VpcSpec.routed): bridged, vx<vni> a port of br0 (one L2 domain across vhosts); routed
(docs/routed-overlay.md), vx<vni> an L3 device whose MAC is derived from the vhost's VTEP, with IPv6 on
(no address) for the link-local next hops of remote vhosts, and br0 answering ARP for what is routed away.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from merak import netns, rtnl
from merak.errors import AlreadyExists, FailedPrecondition
from services.agent import kernel
from services.agent.models import VpcSpec
from services.agent.validation import VPC_NS_RE, check_vni

BRIDGE = "br0"
VXLAN_PORT = 4789


def vtep_mac(vtep: str) -> str:
    """The MAC of a routed VPC's vx<vni> on the vhost with this VTEP: 02:00:<its 4 bytes>, so every
    vhost knows every other one's without being told."""
    return "02:00:" + ipaddress.IPv4Address(vtep).packed.hex(":")


def vtep_link_local(vtep: str) -> str:
    """The IPv6 link-local next hop standing for the vhost with this VTEP: fe80::<hi16>:<lo16>. Another
    address family than the VPC's, so no VPC address can collide with it (an IPv4 next hop equal to a
    VPC address is refused: "Nexthop has invalid gateway")."""
    packed = ipaddress.IPv4Address(vtep).packed
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(10) + packed))


@dataclass(slots=True)
class VpcState:
    """What one VPC namespace holds, read once per call."""

    ns: str
    vpc_id: str
    bridge: int
    vxlan: int
    mtu: int
    links: dict[str, Any] = field(default_factory=dict)
    # vx<vni> is not a port of br0: the routed shape.
    routed: bool = False


class VpcNamespaces:
    """The VPC namespaces of one vhost; the caller serializes changes."""

    def __init__(self, vhost_ns: str, prefix: str, underlay_ip: str, underlay_dev: str) -> None:
        self.vhost_ns = vhost_ns
        self.prefix = prefix
        self.underlay_ip = underlay_ip
        self.underlay_dev = underlay_dev

    def ns_of(self, vni: int) -> str:
        """The namespace of the VPC with `vni` on this vhost."""
        return f"{self.prefix}-vpc{vni}"

    def by_vni(self) -> dict[int, str]:
        """The VPC namespaces of this vhost by VNI."""
        found: dict[int, str] = {}
        for ns in netns.list_names(f"{self.prefix}-vpc"):
            match = VPC_NS_RE.match(ns[len(self.prefix) + 1 :])
            if match:
                found[int(match.group(1))] = ns
        return found

    def ensure(self, vpc: VpcSpec) -> bool:
        """Create or converge the VPC's namespace; True when it was created (and removed on a failure)."""
        ns = self.ns_of(vpc.vni)
        created = False
        if not netns.exists(ns):
            netns.create(ns)
            created = True
        try:
            self._converge(ns, vpc)
        except BaseException:
            if created:
                self.remove(ns)
            raise
        return created

    @contextlib.contextmanager
    def opened(self, vni: int, *, every_link: bool = True) -> Iterator[tuple[Any, VpcState]]:
        """One socket in the VPC namespace of `vni` and what it holds; FailedPrecondition if not ensured.
        Without `every_link`, the state's `links` are br0 and vx<vni> only: the overlay's calls need no
        more, and a dump of a VPC with 100 VMs' ports took pyroute2 ~15 ms, twice per SetVpcPeers."""
        check_vni("vni", vni)
        ns = self.ns_of(vni)
        if not netns.exists(ns):
            raise FailedPrecondition(f"vpc with vni {vni} is not ensured on {self.vhost_ns}")
        with kernel.ipr_in(ns) as ipr:
            yield ipr, self._load(ipr, ns, vni, every_link)

    def remove(self, ns: str) -> None:
        """Delete the VPC namespace's devices, then the namespace."""
        # Deleting vx<vni> explicitly frees its VNI and UDP socket in the vhost namespace now; a
        # namespace only goes away when its last reference does, later, in a kernel worker.
        with contextlib.suppress(OSError, NetlinkError), kernel.ipr_in(ns) as ipr:
            kernel.delete_links(
                ipr, {name: int(link["index"]) for name, link in kernel.links(ipr).items() if name != "lo"}
            )
        netns.remove(ns)

    def _converge(self, ns: str, vpc: VpcSpec) -> None:
        """Bring the existing namespace `ns` to `vpc`, with one socket inside it."""
        gateway_mac = vpc.gateway_mac.lower()
        with netns.entered(ns):
            # No IPv6 in the overlay: its link-local chatter would be replicated to every VTEP.
            # Written only when different: writing "all" again would turn IPv6 off on every device,
            # a routed VPC's vx<vni> too, and flush its next hops.
            kernel.ensure_sysctl("net/ipv6/conf/all/disable_ipv6", "1", optional=True)
            kernel.ensure_sysctl("net/ipv6/conf/default/disable_ipv6", "1", optional=True)
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
                self._create_vxlan(ns, vpc.vni, vtep_mac(self.underlay_ip) if vpc.routed else None)
                vx = ipr.link("get", ifname=vx_name)[0]
            else:
                self._check_vxlan(vx, vpc.vni)
            if vpc.routed:
                self._route_shape(ipr, ns, vx)
                return
            ipr.link("set", index=vx["index"], master=br, state="up")
            # ARP suppression: a VM's ARP request for a VM the control plane pushed (a neighbour
            # entry on br0, its MAC behind this port) is answered by the bridge, and not flooded to
            # every VTEP of the VPC: one flat L2 domain of 10,000 VMs otherwise drowns in them.
            ipr.brport("set", index=vx["index"], neigh_suppress=1)

    def _route_shape(self, ipr: Any, ns: str, vx: Any) -> None:
        """vx<vni> as an L3 device (the routed shape), and br0 answering ARP for what is routed away."""
        index = int(vx["index"])
        name = str(vx.get("ifname"))
        mac = vtep_mac(self.underlay_ip)
        if vx.get("master"):  # converging a bridged VPC: its bridge entries for the port go with it
            ipr.link("set", index=index, master=0)
        if str(vx.get("address")).lower() != mac:
            ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, address=mac)
        # IPv6 on vx<vni> for the link-local next hops, but no address of its own (no DAD, router or
        # MLD solicitations): addrgenmode none first, then IPv6 on (the namespace's default is off, and
        # a device that enters the namespace gets the default), then up.
        with rtnl.socket_in(ns) as sock:
            rtnl.check(
                sock, [rtnl.link_set(index, f"set {name} addrgenmode none", up=False, no_ipv6_addresses=True)]
            )
        with netns.entered(ns):
            kernel.ensure_sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "0")
            # A VM's ARP for an address routed elsewhere (a same-subnet VM on another vhost) is answered
            # with the gateway's MAC, at once (the default delays broadcast proxy answers up to 0.8 s).
            kernel.ensure_sysctl(f"net/ipv4/conf/{BRIDGE}/proxy_arp", "1")
            kernel.ensure_sysctl(f"net/ipv4/neigh/{BRIDGE}/proxy_delay", "0")
        ipr.link("set", index=index, state="up")

    def _create_vxlan(self, ns: str, vni: int, mac: str | None = None) -> None:
        """Create vx<vni> from the vhost namespace straight into the VPC namespace `ns` (with `mac`, when
        given)."""
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
            options: dict[str, Any] = {"address": mac} if mac else {}
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
                **options,
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

    def _load(self, ipr: Any, ns: str, vni: int, every_link: bool = True) -> VpcState:
        """Read br0, vx<vni> and every link of the VPC namespace with one dump (or br0 and vx<vni> alone)."""
        if every_link:
            links = kernel.links(ipr)
        else:
            named = {name: kernel.link_or_none(ipr, name) for name in (BRIDGE, f"vx{vni}")}
            links = {name: link for name, link in named.items() if link is not None}
        bridge, vx = links.get(BRIDGE), links.get(f"vx{vni}")
        if bridge is None or vx is None:
            raise FailedPrecondition(f"vpc with vni {vni} is incomplete on {self.vhost_ns}: run ensure_vpc")
        return VpcState(
            ns=ns,
            vpc_id=str(bridge.get("ifalias") or ""),
            bridge=int(bridge["index"]),
            vxlan=int(vx["index"]),
            mtu=int(vx.get("mtu")),
            links=links,
            routed=vx.get("master") != bridge["index"],
        )
