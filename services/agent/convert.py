"""The agent's requests turned into models, each bad value an InvalidArgument naming its field."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from merak.errors import InvalidArgument
from merak.naming import gateway_mac
from merak.v1 import agent_pb2
from services.agent.models import Neighbor, RoutedPeer, SubnetSpec, VmSpec, VpcSpec
from services.agent.validation import (
    MAX_VNI,
    check_prefix,
    check_vm_name,
    validate_neighbor,
    validate_vm,
    validate_vpc,
)

M = TypeVar("M")


def vm_name(field: str, name: str) -> None:
    """InvalidArgument on `field` unless `name` can name a VM (the name's rule alone: checking a whole VM
    built around it was a third of the agent's CPU deleting a million fake VMs)."""
    _valid(field, check_vm_name, name)


def _valid(field: str, check: Callable[[M], object], model: M) -> M:
    """`model` if `check` passes it, else InvalidArgument on `field` with the check's reason."""
    try:
        check(model)
    except ValueError as exc:
        raise InvalidArgument(field, str(exc)) from None
    return model


def checked_vm(field: str, spec: VmSpec) -> VmSpec:
    """`spec` if it follows the VM rules, else InvalidArgument on `field`."""
    return _valid(field, validate_vm, spec)


def checked_vpc(field: str, vpc: VpcSpec) -> VpcSpec:
    """`vpc` if it follows the VPC rules (its id among them), else InvalidArgument on `field`."""
    return _valid(field, validate_vpc, vpc)


def vm_spec(field: str, vm: agent_pb2.VmSpec) -> VmSpec:
    """The VM of a batch request. Its VPC id and gateway are shared by every VM of its subnet, and its name
    by the VMs of the same place on other vhosts ("v0-0-7"), so they are interned: an agent holding a
    million fake VMs kept a copy of each per VM (~180 MB)."""
    return checked_vm(
        field,
        VmSpec(
            sys.intern(vm.name),
            sys.intern(vm.vpc_id),
            vm.vni,
            vm.ip,
            vm.prefix_len,
            vm.mac.lower(),
            sys.intern(vm.gateway),
            vm.ovn_port,
        ),
    )


def vpc_spec(field: str, vpc: agent_pb2.VpcSpec) -> VpcSpec:
    """The VPC of a batch request; its gateway MAC derived from the VNI when not given."""
    subnets = tuple(SubnetSpec(s.cidr, s.gateway) for s in vpc.subnets)
    number = vni(f"{field}.vni", vpc.vni)  # first: the gateway MAC is derived from it
    mac = vpc.gateway_mac or gateway_mac(number)
    return checked_vpc(field, VpcSpec(vpc.vpc_id, vpc.vni, subnets, mac.lower(), routed=vpc.routed))


def vni(field: str, value: int) -> int:
    """`value` if it is a VXLAN network identifier (1..2^24-1), else InvalidArgument on `field`."""
    if not 1 <= value <= MAX_VNI:
        raise InvalidArgument(field, f"must be between 1 and {MAX_VNI}, got {value}")
    return value


def ipv4(field: str, text: str) -> str:
    """`text` as a normalized IPv4 address, else InvalidArgument on `field`."""
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise InvalidArgument(field, f"{text!r} is not an IPv4 address") from None


def neighbor(field: str, proto: agent_pb2.Neighbor) -> Neighbor:
    """A remote VM of an overlay request."""
    return _valid(field, validate_neighbor, Neighbor(proto.ip, proto.mac.lower(), proto.vtep))


def prefix(field: str, text: str) -> str:
    """`text` as a normalized IPv4 prefix (1..32 bits, no host bits), else InvalidArgument on `field`."""
    try:
        return str(check_prefix("prefix", text))
    except ValueError:
        raise InvalidArgument(
            field, f"{text!r} is not an IPv4 prefix (a.b.c.d/len, len 1..32, no host bits)"
        ) from None


def routed_peers(field: str, peers: Sequence[agent_pb2.VpcPeer]) -> list[RoutedPeer]:
    """The remote vhosts of a routed SetVpcPeers: each VTEP once, each prefix routed to one vhost only."""
    out: list[RoutedPeer] = []
    owners: dict[str, str] = {}
    seen: set[str] = set()
    for i, peer in enumerate(peers):
        vtep = ipv4(f"{field}[{i}].vtep", peer.vtep)
        if vtep in seen:
            raise InvalidArgument(f"{field}[{i}].vtep", f"{vtep} is given twice")
        seen.add(vtep)
        prefixes: list[str] = []
        for j, text in enumerate(peer.prefixes):
            where = f"{field}[{i}].prefixes[{j}]"
            normal = prefix(where, text)
            owner = owners.setdefault(normal, vtep)
            if owner != vtep:
                raise InvalidArgument(where, f"{normal} is also routed to {owner}")
            prefixes.append(normal)
        out.append(RoutedPeer(vtep, tuple(dict.fromkeys(prefixes))))
    return out
