"""The ovn plugin's row names, router MACs and ACL matches (pure, no I/O)."""

from __future__ import annotations

import re

import pytest

from services.network.models import RuleState, SecurityGroupState
from services.network.plugins.ovn import names
from services.network.plugins.ovn.acls import ALLOW_PRIORITY, DROP_PRIORITY, drop_acls, group_acls, rule_match

# What the agents accept as an OVS iface-id (services/agent/validation.py), and OVN's identifiers.
AGENT_PORT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
OVN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LONG = "x" * 128


@pytest.mark.parametrize("vm_id", ["vhost-0.vm-0", LONG, "a/b c@d", "0"])
def test_vm_port_names_suit_the_agents(vm_id: str) -> None:
    name = names.vm_port("nc", vm_id)
    assert AGENT_PORT.match(name)
    assert name == names.vm_port("nc", vm_id)  # deterministic


def test_names_are_unique_across_configs_and_kinds() -> None:
    made = {
        f(config, key)
        for config in ("nc-1", "nc-2", LONG)
        for key in ("a", "a-b", "a_b", LONG)
        for f in (names.router, names.switch, names.router_port, names.switch_router_port, names.vm_port)
    }
    assert len(made) == 3 * 4 * 5
    # Cleaning an id may make two ids look alike; the hash keeps them apart.
    assert names.port_group("nc", "a-b") != names.port_group("nc", "a_b")
    assert names.vm_port("nc", "a/b") != names.vm_port("nc", "a_b")


@pytest.mark.parametrize("group_id", ["sg-1", "0abc", "a.b:c", LONG])
def test_port_group_names_are_ovn_identifiers(group_id: str) -> None:
    assert OVN_IDENTIFIER.match(names.port_group("nc", group_id))
    assert OVN_IDENTIFIER.match(names.drop_group("nc"))
    assert names.drop_group("nc") != names.drop_group("nc-2")


def test_router_macs_are_local_unicast_and_unique_per_subnet() -> None:
    macs = [names.router_mac("nc", slot) for slot in range(300)]
    assert len(set(macs)) == 300
    assert all(int(mac[:2], 16) == names.ROUTER_MAC_PREFIX for mac in macs)
    assert names.ROUTER_MAC_PREFIX & 0b11 == 0b10  # locally administered, not multicast
    assert names.router_mac("nc", 5) == names.router_mac("nc", 5) != names.router_mac("nc-2", 5)


def _rule(**fields: str) -> RuleState:
    base = dict.fromkeys(
        ("id", "name", "description", "protocol", "port_range", "remote_group_id", "remote_ip_prefix"), ""
    )
    return RuleState(**{**base, "ethertype": "IPv4", "direction": "ingress", **fields})


@pytest.mark.parametrize(
    ("fields", "tail"),
    [
        ({}, ""),
        ({"protocol": "tcp", "port_range": "80-80"}, " && tcp && tcp.dst == 80"),
        ({"protocol": "udp", "port_range": "53-60"}, " && udp && udp.dst >= 53 && udp.dst <= 60"),
        ({"protocol": "6"}, " && tcp"),
        ({"protocol": "icmp"}, " && icmp4"),
        ({"protocol": "icmp", "port_range": "8-8"}, " && icmp4 && icmp4.type == 8"),
        ({"protocol": "icmp", "port_range": "3-1"}, " && icmp4 && icmp4.type == 3 && icmp4.code == 1"),
        ({"protocol": "132"}, " && ip.proto == 132"),
        ({"remote_ip_prefix": "10.0.0.0/8", "protocol": "tcp"}, " && ip4.src == 10.0.0.0/8 && tcp"),
    ],
)
def test_ingress_rule_matches(fields: dict[str, str], tail: str) -> None:
    assert rule_match("nc", "pg", _rule(**fields)) == "outport == @pg && ip4" + tail


def test_egress_remote_group_and_ipv6() -> None:
    remote = names.port_group("nc", "sg-2")
    egress = _rule(direction="egress", remote_group_id="sg-2", protocol="tcp")
    assert rule_match("nc", "pg", egress) == f"inport == @pg && ip4 && ip4.dst == ${remote}_ip4 && tcp"
    v6 = _rule(ethertype="IPv6", protocol="icmp", remote_ip_prefix="fd00::/8")
    assert rule_match("nc", "pg", v6) == "outport == @pg && ip6 && ip6.src == fd00::/8 && icmp6"


def test_group_and_drop_acls() -> None:
    group = SecurityGroupState("sg-1", "web", "t", "p", (_rule(id="r1"), _rule(id="r2", direction="egress")))
    pg = names.port_group("nc", "sg-1")
    acls = group_acls("nc", group)
    assert [(a.direction, a.priority, a.action) for a in acls] == [
        ("to-lport", ALLOW_PRIORITY, "allow-related"),
        ("from-lport", ALLOW_PRIORITY, "allow-related"),
    ]
    assert acls[0].match.startswith(f"outport == @{pg} ")
    assert acls[1].external_ids == {
        "merak-netconfig": "nc",
        "merak-security-group": "sg-1",
        "merak-rule": "r2",
    }
    drop = names.drop_group("nc")
    assert {(a.direction, a.priority, a.match, a.action) for a in drop_acls("nc")} == {
        ("from-lport", DROP_PRIORITY, f"inport == @{drop} && ip", "drop"),
        ("to-lport", DROP_PRIORITY, f"outport == @{drop} && ip", "drop"),
    }
    assert DROP_PRIORITY < ALLOW_PRIORITY
