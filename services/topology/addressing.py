"""Data-plane addresses of a topology: the CIDR and NIC addresses a request gives, free ones handed out."""

from __future__ import annotations

import ipaddress

from merak.errors import InvalidArgument


def parse_cidr(text: str) -> ipaddress.IPv4Network:
    """`config.data_plane_cidr` as a network; host bits are allowed and dropped."""
    if "/" not in text:
        raise InvalidArgument(
            "config.data_plane_cidr", f"must be an IPv4 network in CIDR form like 10.200.0.0/16: {text!r}"
        )
    try:
        # strict=False: "10.200.3.4/16" means 10.200.0.0/16, as most tools read it.
        return ipaddress.IPv4Network(text, strict=False)
    except ValueError:
        raise InvalidArgument(
            "config.data_plane_cidr", f"must be an IPv4 network in CIDR form like 10.200.0.0/16: {text!r}"
        ) from None


def parse_interface(where: str, text: str) -> ipaddress.IPv4Interface:
    """A NIC's declared address with its prefix length; neither the network nor the broadcast address."""
    if "/" not in text:
        raise InvalidArgument(where, f"must be an IPv4 address with prefix length like 10.0.0.1/24: {text!r}")
    try:
        address = ipaddress.IPv4Interface(text)
    except ValueError:
        raise InvalidArgument(
            where, f"must be an IPv4 address with prefix length like 10.0.0.1/24: {text!r}"
        ) from None
    net = address.network
    if net.prefixlen <= 30 and address.ip in (net.network_address, net.broadcast_address):
        raise InvalidArgument(where, f"{address.ip} is the network or broadcast address of {net}")
    return address


def host_count(net: ipaddress.IPv4Network) -> int:
    """How many host addresses `net` holds."""
    # The network and broadcast addresses are not given to hosts; /31 and /32 therefore hold none.
    return max(net.num_addresses - 2, 0)


def dotted(address: int) -> str:
    """The dotted form of an IPv4 address given as an int."""
    # Formatting the int directly is several times faster than str(IPv4Address(...)) at 10^5-10^6 hosts.
    return f"{address >> 24}.{(address >> 16) & 255}.{(address >> 8) & 255}.{address & 255}"


def free_addresses(net: ipaddress.IPv4Network, used: set[int], count: int) -> list[str]:
    """`count` addresses of `net` not in `used` (CIDR form, lowest first), for vhost NICs declared without."""
    first = int(net.network_address) + 1
    last = first + host_count(net) - 1
    free = host_count(net) - sum(1 for a in used if first <= a <= last)
    if free < count:
        raise InvalidArgument(
            "config.data_plane_cidr",
            f"{net} holds {free} free vhost addresses, but {count} vhost NICs need one",
        )
    suffix = f"/{net.prefixlen}"
    addresses: list[str] = []
    candidate = first
    for _ in range(count):
        while candidate in used:
            candidate += 1
        addresses.append(dotted(candidate) + suffix)
        candidate += 1
    return addresses
