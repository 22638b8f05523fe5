"""Deterministic identifiers that several services must agree on without talking to each other."""

from __future__ import annotations

import hashlib

MAX_VNI = 2**24 - 1


def vni_for_vpc(vpc_id: str) -> int:
    """A VNI derived from a VPC id, for callers (Merak's PortHandler) that carry no VNI."""
    return int.from_bytes(hashlib.sha1(vpc_id.encode()).digest()[:3], "big") % (MAX_VNI - 4096) + 4096


def gateway_mac(vni: int) -> str:
    """The anycast gateway MAC of a VPC: the same on every vhost, different per VNI (24 bits)."""
    if not 0 <= vni < 1 << 24:
        raise ValueError(f"vni: {vni} is not a 24-bit VXLAN network identifier")
    return "0e:" + ":".join(f"{b:02x}" for b in (vni.to_bytes(3, "big") + b"\x00\x01"))


def topology_short_id(topology_id: str) -> str:
    """The 6 hex digits that name a topology's kernel objects (`mk-<short id>-…` namespaces)."""
    return hashlib.sha1(topology_id.encode()).hexdigest()[:6]
