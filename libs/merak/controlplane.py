"""Which control-plane endpoints (Alcor URLs, OVN databases) a request may make us reach.

A request names the control plane under test (a network config's Alcor host or OVN databases, a
compute config's Alcor port manager), and the network service and every agent then send requests
there from inside the machine: without a check, any local port answers them. The operator lists what
may be reached, `MERAK_CONTROL_PLANE_ALLOW`, comma-separated entries:

- `HOST:PORTS`: HOST an IPv4 address or CIDR (`10.0.0.5`, `10.0.0.0/24`), an IPv6 one in brackets
  (`[::1]`, `[fd00::/64]`), or a DNS name matched as written (`alcor.example.internal`; never
  resolved, so an address of that name is not allowed by it); PORTS one port or a range (`30001-30008`);
- `unix:/path`: one OVSDB unix socket.

Nothing listed: nothing may be reached. A URL without a port means its scheme's (80, 443).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from merak.errors import InvalidArgument
from merak.ovs import check_remote

ALLOW_ENV = "MERAK_CONTROL_PLANE_ALLOW"
_DEFAULT_PORTS = {"http": 80, "https": 443}

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AllowedEndpoint:
    """One entry: an address range or a name, and a port range; or one unix socket."""

    network: IpNetwork | None = None
    name: str = ""
    ports: tuple[int, int] = (0, 0)
    unix: str = ""

    def allows(self, host: str, port: int) -> bool:
        """Whether `host` (an address or a name) and `port` are within this entry."""
        if self.unix or not self.ports[0] <= port <= self.ports[1]:
            return False
        address = _address(host)
        if address is None:
            return bool(self.name) and self.name == _name(host)
        return self.network is not None and address in self.network


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _name(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _ports(text: str, entry: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise ValueError(f"{entry!r}: {text!r} is not a port or a port range (30001-30008)") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"{entry!r}: ports {text} are not within 1-65535")
    return first, last


def parse_entry(entry: str) -> AllowedEndpoint:
    """One `HOST:PORTS` or `unix:/path` entry; ValueError naming it when it is neither."""
    text = entry.strip()
    if text.startswith("unix:"):
        try:
            return AllowedEndpoint(unix=check_remote(ALLOW_ENV, text))
        except InvalidArgument as exc:
            raise ValueError(exc.problem) from None
    host, colon, ports = text.rpartition(":")
    if not colon or not host:
        raise ValueError(f"{entry!r} is not HOST:PORTS (e.g. 127.0.0.1:30001-30008) or unix:/path")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        network = ipaddress.ip_network(host.strip("[]") if bracketed else host, strict=False)
    except ValueError:
        network = None
    if network is not None:
        if network.version == 6 and not bracketed:
            raise ValueError(f"{entry!r}: an IPv6 address goes in brackets ([::1]:6641)")
        return AllowedEndpoint(network=network, ports=_ports(ports, entry))
    if bracketed or not all(c.isalnum() or c in "-." for c in host):
        raise ValueError(f"{entry!r}: {host!r} is not an address, a CIDR or a host name")
    return AllowedEndpoint(name=_name(host), ports=_ports(ports, entry))


@dataclass(frozen=True, slots=True)
class ControlPlaneAllow:
    """The control-plane endpoints the operator allowed; `check_*` refuse any other (INVALID_ARGUMENT)."""

    entries: tuple[AllowedEndpoint, ...] = ()

    @classmethod
    def parse(cls, text: str) -> ControlPlaneAllow:
        """`MERAK_CONTROL_PLANE_ALLOW`'s comma-separated entries (ValueError naming a bad one)."""
        return cls(tuple(parse_entry(part) for part in text.split(",") if part.strip()))

    def including(self, *entries: str) -> ControlPlaneAllow:
        """This list and `entries` (what the operator set elsewhere, e.g. the stack's own OVN)."""
        return ControlPlaneAllow(self.entries + ControlPlaneAllow.parse(",".join(entries)).entries)

    def allows(self, host: str, port: int) -> bool:
        """Whether `host:port` is an allowed endpoint."""
        return any(entry.allows(host, port) for entry in self.entries)

    def check(self, field: str, host: str, port: int) -> None:
        """INVALID_ARGUMENT naming `field` unless `host:port` is allowed."""
        if not self.allows(host, port):
            shown = f"[{host.strip('[]')}]" if ":" in host else host
            raise InvalidArgument(
                field, f"{shown[:100]}:{port} is not an allowed control-plane endpoint ({ALLOW_ENV})"
            )

    def check_url(self, field: str, url: str) -> None:
        """An http(s) URL's host and port (its scheme's when it names none) must be allowed."""
        parts = urlsplit(url.strip())
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise InvalidArgument(field, f"{url[:100]!r} is not an http(s) URL with a host")
        self.check(field, parts.hostname, port)

    def check_ovsdb(self, field: str, remote: str) -> None:
        """An OVSDB remote (unix:/path, tcp:IP:PORT, ssl:IP:PORT) must be allowed: a unix socket by its
        path, the others by address and port."""
        check_remote(field, remote)
        if remote.startswith("unix:"):
            if not any(entry.unix == remote for entry in self.entries):
                raise InvalidArgument(
                    field, f"{remote[:120]} is not an allowed control-plane endpoint ({ALLOW_ENV})"
                )
            return
        _, _, address = remote.partition(":")
        host, _, port = address.rpartition(":")
        self.check(field, host.strip("[]"), int(port))
