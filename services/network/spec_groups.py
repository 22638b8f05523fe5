"""A network config request's security groups validated, and the ids of the request (for spec.py); every
error names its field. No I/O."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from merak.errors import InvalidArgument
from merak.ids import OBJECT_ID, OBJECT_ID_FORM
from merak.skips import Skips
from merak.v1 import network_pb2
from services.network.models import RuleSpec, SecurityGroupSpec, VpcSpec

NETWORK = "config.network"
_PROTOCOLS = ("tcp", "udp", "icmp", "icmpv6")
_PORT_RANGES = {"tcp": (1, 65535), "udp": (1, 65535), "icmp": (0, 255), "icmpv6": (0, 255)}


class Ids:
    """Ids given in the request, which must be unique per kind within the config."""

    def __init__(self, skips: Skips) -> None:
        self.seen: dict[tuple[str, str], str] = {}
        self.skips = skips

    def claim(self, kind: str, value: str, field: str) -> str:
        value = value.strip()
        if not value:
            return ""
        if not OBJECT_ID.fullmatch(value):
            # Merak's teste2e sends a CIDR as the VPC id; Alcor gave the VPC an id of its own anyway.
            self.skips.skip(field, f"{value!r} is not an id ({OBJECT_ID_FORM})", "an id is assigned")
            return ""
        holder = self.seen.setdefault((kind, value), field)
        if holder != field:
            owner = holder.removeprefix(NETWORK + ".").rpartition(".")[0]
            raise InvalidArgument(field, f"{value!r} is already the id of {owner}")
        return value


def security_groups(
    groups: Sequence[network_pb2.InternalSecurityGroupInfo], first_vpc: VpcSpec, ids: Ids, skips: Skips
) -> tuple[SecurityGroupSpec, ...]:
    by_id: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        group_id = ids.claim("security_group", group.id, f"{NETWORK}.security_groups[{i}].id")
        if group_id:
            by_id[group_id] = i
        if group.name.strip():
            by_name.setdefault(group.name.strip(), []).append(i)
    specs = []
    for i, group in enumerate(groups):
        field = f"{NETWORK}.security_groups[{i}]"
        rules = []
        for k, rule in enumerate(group.rules):
            try:
                rules.append(_rule(f"{field}.rules[{k}]", rule, by_id, by_name, ids))
            except InvalidArgument as exc:
                # Merak's clients send rules made of "string"; Merak never sent rules to Alcor at all.
                skips.skip(exc.field, exc.problem, "rule skipped")
        specs.append(
            SecurityGroupSpec(
                id=group.id.strip(),
                name=group.name.strip(),
                # Merak's scenario manager never copies these two into the request.
                tenant_id=group.tenant_id.strip() or first_vpc.tenant_id,
                project_id=group.project_id.strip() or first_vpc.project_id,
                rules=tuple(rules),
                apply_to=tuple(group.apply_to),
            )
        )
    return tuple(specs)


def _rule(
    field: str,
    rule: network_pb2.InternalSecurityGroupRulelnfo,
    by_id: dict[str, int],
    by_name: dict[str, list[int]],
    ids: Ids,
) -> RuleSpec:
    ethertype = {"": "IPv4", "ipv4": "IPv4", "ipv6": "IPv6"}.get(rule.ethertype.strip().lower())
    if ethertype is None:
        raise InvalidArgument(f"{field}.ethertype", f"{rule.ethertype!r} is not IPv4 or IPv6")
    # Merak's scenario manager drops the direction; a rule without one guards traffic coming in.
    direction = rule.direction.strip().lower() or "ingress"
    if direction not in ("ingress", "egress"):
        raise InvalidArgument(f"{field}.direction", f"{rule.direction!r} is not ingress or egress")
    protocol = rule.protocol.strip().lower()
    protocol = "" if protocol == "any" else protocol
    if protocol and protocol not in _PROTOCOLS and not (protocol.isdigit() and int(protocol) <= 255):
        raise InvalidArgument(
            f"{field}.protocol", f"{rule.protocol!r} is not one of {', '.join(_PROTOCOLS)}, any, or 0-255"
        )
    if protocol == "icmpv6" and ethertype == "IPv4":
        raise InvalidArgument(f"{field}.protocol", "icmpv6 needs ethertype IPv6")
    port_min, port_max = _port_range(f"{field}.port_range", rule.port_range, protocol)
    prefix = ""
    if rule.remote_ip_prefix.strip():
        try:
            network = ipaddress.ip_network(rule.remote_ip_prefix.strip(), strict=False)
        except ValueError:
            raise InvalidArgument(
                f"{field}.remote_ip_prefix", f"{rule.remote_ip_prefix!r} is not a CIDR"
            ) from None
        if f"IPv{network.version}" != ethertype:
            raise InvalidArgument(f"{field}.remote_ip_prefix", f"{network} is not {ethertype}")
        prefix = str(network)
    remote_group: int | None = None
    remote = rule.remote_group_id.strip()
    if remote:
        if prefix:
            raise InvalidArgument(
                f"{field}.remote_group_id", "give remote_group_id or remote_ip_prefix, not both"
            )
        named = by_name.get(remote, [])
        if remote in by_id:
            remote_group = by_id[remote]
        elif len(named) == 1:
            remote_group = named[0]
        elif named:
            raise InvalidArgument(
                f"{field}.remote_group_id", f"{remote!r} names {len(named)} security groups; use an id"
            )
        else:
            raise InvalidArgument(
                f"{field}.remote_group_id",
                f"unknown security group {remote!r} (give the id or name of a security group of this config)",
            )
    return RuleSpec(
        id=ids.claim("rule", rule.id, f"{field}.id"),
        name=rule.name.strip(),
        description=rule.description,
        ethertype=ethertype,
        direction=direction,
        protocol=protocol,
        port_range="" if port_min is None else f"{port_min}-{port_max}",
        port_min=port_min,
        port_max=port_max,
        remote_group=remote_group,
        remote_ip_prefix=prefix,
    )


def _port_range(field: str, text: str, protocol: str) -> tuple[int | None, int | None]:
    value = text.replace(" ", "")
    if not value:
        return None, None
    low, dash, high = value.partition("-")
    if not low.isdigit() or (dash and not high.isdigit()):
        raise InvalidArgument(field, f"{text!r} is not a port or a range ('80' or '8000-8080')")
    port_min = int(low)
    port_max = int(high) if dash else port_min
    if not protocol:
        raise InvalidArgument(field, "a port range needs a protocol")
    if protocol not in _PORT_RANGES:
        raise InvalidArgument(field, f"port ranges apply to {', '.join(_PROTOCOLS)} only, not {protocol}")
    lowest, highest = _PORT_RANGES[protocol]
    if not (lowest <= port_min <= highest and lowest <= port_max <= highest):
        raise InvalidArgument(field, f"{text!r}: {protocol} values lie in {lowest}-{highest}")
    if protocol in ("tcp", "udp") and port_min > port_max:
        raise InvalidArgument(field, f"{text!r}: the first port is above the last")
    return port_min, port_max
