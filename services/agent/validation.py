"""The rules VPC, VM and neighbour specs must follow, shared by the real and the fake data plane."""

from __future__ import annotations

import hashlib
import ipaddress
import re

from merak.ids import OBJECT_ID, OBJECT_ID_FORM
from services.agent.models import Neighbor, RoutedPeer, VmSpec, VpcSpec

ZERO_MAC = "00:00:00:00:00:00"
MAX_VNI = (1 << 24) - 1
MAX_IFNAME = 15  # IFNAMSIZ - 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
VPC_NS_RE = re.compile(r"^vpc([0-9]+)$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# What ipaddress.IPv4Address accepts from a string (four decimal octets, no leading zeros), at a
# tenth of its cost: a vhost checks every VM of its VPCs on every overlay push.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_RE = re.compile(rf"^{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}$")
# An OVN logical switch port name as the network service makes them (external_ids:iface-id).
OVN_PORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def check_name(what: str, name: object) -> str:
    """`name` if it is a valid VM name or prefix, else ValueError."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"{what}: {name!r} is not a valid name (1-32 of a-z, 0-9 and '-', not starting with '-')"
        )
    return name


def check_vm_name(name: object) -> str:
    """`name` if it is a valid VM name (one that cannot pass for a VPC namespace), else ValueError."""
    name = check_name("vm name", name)
    if VPC_NS_RE.match(name):
        raise ValueError(f"vm name: {name!r} is reserved for VPC namespaces (vpc<vni>)")
    return name


def check_ipv4(what: str, value: object) -> ipaddress.IPv4Address:
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


def check_vni(what: str, vni: object) -> int:
    """`vni` if it is a 24-bit VXLAN network identifier, else ValueError."""
    if not isinstance(vni, int) or isinstance(vni, bool) or not 1 <= vni <= MAX_VNI:
        raise ValueError(f"{what}: {vni!r} is not a VNI (1..{MAX_VNI})")
    return vni


def _check_vpc_id(what: str, vpc_id: object) -> str:
    """`vpc_id` if it is usable as an interface alias, else ValueError."""
    if not isinstance(vpc_id, str) or not OBJECT_ID.fullmatch(vpc_id):
        raise ValueError(f"{what}: {vpc_id!r} is not a VPC id ({OBJECT_ID_FORM})")
    return vpc_id


def validate_vpc(vpc: VpcSpec) -> None:
    """Raise ValueError naming the first malformed field of `vpc`."""
    _check_vpc_id("vpc_id", vpc.vpc_id)
    check_vni("vni", vpc.vni)
    if not isinstance(vpc.routed, bool):
        raise ValueError(f"routed: {vpc.routed!r} is not a bool")
    _check_mac("gateway_mac", vpc.gateway_mac)
    networks: list[ipaddress.IPv4Network] = []
    for i, subnet in enumerate(vpc.subnets):
        try:
            net = ipaddress.IPv4Network(subnet.cidr, strict=True)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"subnets[{i}].cidr: {subnet.cidr!r} is not an IPv4 network ({exc})") from None
        gateway = check_ipv4(f"subnets[{i}].gateway", subnet.gateway)
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
    check_vm_name(vm.name)
    where = f"vm {vm.name}"
    _check_vpc_id(f"{where}: vpc_id", vm.vpc_id)
    if vm.ovn_port:  # OVN makes the overlay: no VNI of ours
        if not isinstance(vm.ovn_port, str) or not OVN_PORT_RE.match(vm.ovn_port):
            raise ValueError(f"{where}: ovn_port: {vm.ovn_port!r} is not a logical switch port name")
        if vm.vni:
            raise ValueError(f"{where}: vni: must be 0 for a VM on an OVN port (OVN makes the overlay)")
    else:
        check_vni(f"{where}: vni", vm.vni)
    ip = check_ipv4(f"{where}: ip", vm.ip)
    if not isinstance(vm.prefix_len, int) or isinstance(vm.prefix_len, bool) or not 1 <= vm.prefix_len <= 31:
        raise ValueError(f"{where}: prefix_len: {vm.prefix_len!r} is not in 1..31")
    _check_mac(f"{where}: mac", vm.mac)
    gateway = check_ipv4(f"{where}: gateway", vm.gateway)
    net = ipaddress.IPv4Network(f"{ip}/{vm.prefix_len}", strict=False)
    if vm.prefix_len <= 30 and ip in (net.network_address, net.broadcast_address):
        raise ValueError(f"{where}: ip: {ip} is not a host address of {net}")
    if gateway not in net or gateway == ip:
        raise ValueError(f"{where}: gateway: {gateway} is not another address of {net}")


def _check_ipv4_text(what: str, value: object) -> None:
    if not isinstance(value, str) or not IPV4_RE.match(value):
        raise ValueError(f"{what}: {value!r} is not an IPv4 address")


def validate_neighbor(neighbor: Neighbor) -> None:
    """Raise ValueError naming the first malformed field of `neighbor`."""
    _check_ipv4_text("neighbor ip", neighbor.ip)
    _check_mac(f"neighbor {neighbor.ip}: mac", neighbor.mac)
    _check_ipv4_text(f"neighbor {neighbor.ip}: vtep", neighbor.vtep)


def check_prefix(what: str, value: object) -> ipaddress.IPv4Network:
    """`value` parsed as an IPv4 prefix with no host bits ("10.1.0.64/26"), else ValueError."""
    if isinstance(value, str) and "/" in value:
        try:
            network = ipaddress.IPv4Network(value, strict=True)
        except ValueError:
            pass
        else:
            if network.prefixlen:  # a default route to one vhost would take every other one's traffic
                return network
    raise ValueError(f"{what}: {value!r} is not an IPv4 prefix (a.b.c.d/len, len 1..32, no host bits)")


def validate_routed_peer(peer: RoutedPeer) -> None:
    """Raise ValueError naming the first malformed field of `peer`."""
    check_ipv4("vtep", peer.vtep)
    for i, prefix in enumerate(peer.prefixes):
        check_prefix(f"prefixes[{i}]", prefix)


def host_ifname(vm_name: str) -> str:
    """The VM's veth end in the VPC namespace: "t<name>", or "h<hash>" when that would not fit IFNAMSIZ."""
    if len(vm_name) + 1 <= MAX_IFNAME:
        return f"t{vm_name}"
    # A different first letter keeps hashed names apart from literal ones.
    return "h" + hashlib.sha256(vm_name.encode()).hexdigest()[: MAX_IFNAME - 1]
