"""Security groups as OVN ACLs, the way Neutron's OVN driver writes them (no I/O).

Each group is a Port_Group; each rule one stateful ACL on it (allow-related): an ingress rule is
`to-lport` on `outport == @<group>`, an egress rule `from-lport` on `inport == @<group>`, narrowed by the
IP version, the protocol and ports, and the remote prefix or group (`$<group>_ip4`, the address set OVN
keeps for every port group). Every port that is in some group is also in the config's drop group, whose
lower-priority ACLs drop all IP in both directions: what no rule allows is dropped (ARP is not IP).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.network.models import RuleState, SecurityGroupState
from services.network.plugins.ovn import names

# Neutron's priorities: its rules at 1002 above its drop ACLs at 1001.
ALLOW_PRIORITY = 1002
DROP_PRIORITY = 1001

_PROTOCOL_NUMBERS = {"1": "icmp", "6": "tcp", "17": "udp", "58": "icmpv6"}


@dataclass(frozen=True, slots=True)
class Acl:
    """One ACL row: where it sits and what it does."""

    direction: str
    priority: int
    match: str
    action: str
    external_ids: dict[str, str]


def group_acls(netconfig_id: str, group: SecurityGroupState) -> list[Acl]:
    """The ACLs of a security group's port group, one per rule (identical rules give identical ACLs)."""
    pg = names.port_group(netconfig_id, group.id)
    return [
        Acl(
            "to-lport" if rule.direction == "ingress" else "from-lport",
            ALLOW_PRIORITY,
            rule_match(netconfig_id, pg, rule),
            "allow-related",
            names.owned(netconfig_id, **{names.GROUP: group.id, names.RULE: rule.id}),
        )
        for rule in group.rules
    ]


def drop_acls(netconfig_id: str) -> list[Acl]:
    """The drop group's ACLs: all IP from and to its ports, below every rule."""
    pg = names.drop_group(netconfig_id)
    owned = names.owned(netconfig_id)
    return [
        Acl("from-lport", DROP_PRIORITY, f"inport == @{pg} && ip", "drop", owned),
        Acl("to-lport", DROP_PRIORITY, f"outport == @{pg} && ip", "drop", owned),
    ]


def rule_match(netconfig_id: str, pg: str, rule: RuleState) -> str:
    """The match of one rule of the port group `pg`."""
    ip = "ip4" if rule.ethertype == "IPv4" else "ip6"
    ingress = rule.direction == "ingress"
    parts = [f"outport == @{pg}" if ingress else f"inport == @{pg}", ip]
    remote = f"{ip}.src" if ingress else f"{ip}.dst"
    if rule.remote_ip_prefix:
        parts.append(f"{remote} == {rule.remote_ip_prefix}")
    elif rule.remote_group_id:
        parts.append(f"{remote} == ${names.port_group(netconfig_id, rule.remote_group_id)}_{ip}")
    parts += _protocol(rule, ip)
    return " && ".join(parts)


def _protocol(rule: RuleState, ip: str) -> list[str]:
    protocol = _PROTOCOL_NUMBERS.get(rule.protocol, rule.protocol)
    low, _, high = rule.port_range.partition("-")
    if protocol in ("tcp", "udp"):
        if not low:
            return [protocol]
        if low == high:
            return [protocol, f"{protocol}.dst == {low}"]
        return [protocol, f"{protocol}.dst >= {low}", f"{protocol}.dst <= {high}"]
    if protocol in ("icmp", "icmpv6"):
        # As Neutron: the range's first value is the ICMP type, the second the code (when it differs).
        icmp = "icmp4" if ip == "ip4" else "icmp6"
        parts = [icmp]
        if low:
            parts.append(f"{icmp}.type == {low}")
        if high and high != low:
            parts.append(f"{icmp}.code == {high}")
        return parts
    if protocol:
        return [f"ip.proto == {int(protocol)}"]
    return []
