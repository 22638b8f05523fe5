"""Network config validation, plugin choice, Alcor endpoints and the port MAC scheme (pure, no I/O)."""

from __future__ import annotations

import pytest

from merak.errors import InvalidArgument, ResourceExhausted
from merak.skips import Skips
from merak.v1 import common_pb2, network_pb2
from services.network.models import RESERVED_PER_SUBNET, SubnetState, port_mac
from services.network.plugins.alcor.client import AlcorPorts, alcor_endpoints
from services.network.spec import MAX_SUBNETS, MAX_VPCS, check_extends, resolve_plugin, spec_from_proto


def base() -> network_pb2.InternalNetConfigConfiguration:
    cfg = network_pb2.InternalNetConfigConfiguration(netconfig_id="nc")
    vpc = cfg.network.vpcs.add(vpc_id="v", tenant_id="t", project_id="p", vpc_cidr="10.1.0.0/16")
    vpc.subnets.add(subnet_id="s0", subnet_cidr="10.1.0.0/24")
    vpc.subnets.add(subnet_id="s1", subnet_cidr="10.1.1.0/24", subnet_gw="10.1.1.200")
    cfg.network.security_groups.add(id="g0", name="web")
    return cfg


def invalid(cfg: network_pb2.InternalNetConfigConfiguration) -> str:
    with pytest.raises(InvalidArgument) as caught:
        spec_from_proto(cfg)
    return caught.value.message


def test_defaults_first_host_gateway_and_first_vpc_tenancy() -> None:
    cfg = base()
    cfg.network.vpcs.add(vpc_cidr="10.2.0.0/16")
    spec = spec_from_proto(cfg)
    assert [s.gateway for s in spec.vpcs[0].subnets] == ["10.1.0.1", "10.1.1.200"]
    assert (spec.vpcs[1].tenant_id, spec.vpcs[1].project_id) == ("t", "p")
    group = spec.security_groups[0]
    assert (group.tenant_id, group.project_id) == ("t", "p")  # Merak's scenario manager drops them
    assert spec_from_proto(base()) == spec_from_proto(base())


def test_plugin_comes_from_the_field_or_merak_alcor_ip_service() -> None:
    cfg = base()
    assert resolve_plugin(cfg) == ("native", "")
    cfg.services.add(cmd="alcorIp", url="10.0.0.5", where_to_run="network")
    assert resolve_plugin(cfg) == ("alcor", "10.0.0.5")
    cfg.plugin = "native"
    assert resolve_plugin(cfg) == ("native", "")
    cfg.services[0].url = ""
    cfg.plugin = ""
    assert resolve_plugin(cfg) == ("native", "")  # Merak: an empty alcorIp url means no Alcor


def test_alcor_endpoints_per_service_port_or_one_port() -> None:
    ports = AlcorPorts()
    bare = alcor_endpoints("10.0.0.5", ports)
    assert (bare.vpc, bare.subnet, bare.router, bare.node, bare.sg) == (
        "http://10.0.0.5:30001", "http://10.0.0.5:30002", "http://10.0.0.5:30003", "http://10.0.0.5:30007",
        "http://10.0.0.5:30008",
    )  # fmt: skip
    gateway = alcor_endpoints("https://alcor.example:9009/api/", ports)
    assert {gateway.vpc, gateway.subnet, gateway.router, gateway.node, gateway.sg} == {
        "https://alcor.example:9009/api"
    }


def test_rules_are_normalised() -> None:
    cfg = base()
    rules = cfg.network.security_groups[0].rules
    rules.add(protocol="TCP", port_range="8000 - 8080", ethertype="ipv4", remote_ip_prefix="10.0.0.5/8")
    rules.add(protocol="icmp", port_range="8-0", remote_group_id="web", direction="Egress")
    rules.add(protocol="any")
    first, second, third = spec_from_proto(cfg).security_groups[0].rules
    assert (first.protocol, first.port_min, first.port_max, first.remote_ip_prefix) == (
        "tcp",
        8000,
        8080,
        "10.0.0.0/8",
    )
    assert (first.direction, first.ethertype) == ("ingress", "IPv4")
    assert (second.port_range, second.remote_group, second.direction) == ("8-0", 0, "egress")
    assert (third.protocol, third.port_range) == ("", "")


RULES = {
    "tcp range upside down": (
        {"protocol": "tcp", "port_range": "90-80"},
        "port_range: '90-80': the first port",
    ),
    "port zero": ({"protocol": "udp", "port_range": "0"}, "port_range: '0': udp values lie in 1-65535"),
    "not a range": ({"protocol": "tcp", "port_range": "http"}, "port_range: 'http' is not a port"),
    "ports on gre": ({"protocol": "47", "port_range": "1"}, "port_range: port ranges apply to"),
    "bad protocol": ({"protocol": "sctp-ish"}, "protocol: 'sctp-ish' is not one of"),
    "icmpv6 on IPv4": ({"protocol": "icmpv6"}, "protocol: icmpv6 needs ethertype IPv6"),
    "prefix of the other family": ({"remote_ip_prefix": "::/0"}, "remote_ip_prefix: ::/0 is not IPv4"),
    "prefix and group": ({"remote_ip_prefix": "0.0.0.0/0", "remote_group_id": "g0"}, "remote_group_id: give"),
    "bad direction": ({"direction": "sideways"}, "direction: 'sideways' is not ingress or egress"),
    "bad ethertype": ({"ethertype": "IPX"}, "ethertype: 'IPX' is not IPv4 or IPv6"),
}


@pytest.mark.parametrize("case", list(RULES))
def test_bad_rules_are_skipped_with_a_warning_naming_their_field(case: str) -> None:
    fields, expected = RULES[case]
    cfg = base()
    rules = cfg.network.security_groups[0].rules
    rules.add(**fields)
    rules.add(protocol="tcp", port_range="22")
    skips = Skips()
    (kept,) = spec_from_proto(cfg, skips).security_groups[0].rules
    assert (kept.protocol, kept.port_min) == ("tcp", 22)
    (warning,) = skips.warnings
    assert warning.startswith(f"config.network.security_groups[0].rules[0].{expected}")
    assert warning.endswith("; rule skipped")
    # Strict (the scenario service's gRPC API), the same rule is refused, naming the same field.
    with pytest.raises(InvalidArgument) as caught:
        spec_from_proto(cfg, Skips(strict=True))
    assert caught.value.message.startswith(f"config.network.security_groups[0].rules[0].{expected}")


def test_routers_resolve_ids_cidrs_and_gateways_within_one_vpc() -> None:
    cfg = base()
    other = cfg.network.vpcs.add(vpc_cidr="10.1.0.0/16")  # the same CIDRs in an isolated VPC
    other.subnets.add(subnet_id="o0", subnet_cidr="10.1.0.0/24")
    cfg.network.routers.add(subnets=["s0", "10.1.1.200"])
    cfg.network.routers.add(subnets=["o0"])
    first, second = spec_from_proto(cfg).routers
    assert (first.vpc, first.subnets, second.vpc, second.subnets) == (0, (0, 1), 1, (0,))

    ambiguous = base()
    ambiguous.network.vpcs.append(ambiguous.network.vpcs[0])
    ambiguous.network.vpcs[1].vpc_id = "w"
    for subnet in ambiguous.network.vpcs[1].subnets:
        subnet.subnet_id += "-w"
    ambiguous.network.routers.add(subnets=["10.1.0.0/24"])
    assert invalid(ambiguous).startswith(
        "config.network.routers[0].subnets: matches subnets in vpcs[0] and vpcs[1]"
    )

    twice = base()
    twice.network.routers.add(subnets=["s0"])
    twice.network.routers.add(subnets=["10.1.0.1"])
    assert (
        invalid(twice) == "config.network.routers[1].subnets[0]: vpcs[0].subnets[0] already joins routers[0]"
    )

    empty = base()
    empty.network.routers.add(name="lonely")
    skips = Skips()
    assert spec_from_proto(empty, skips).routers == ()
    assert skips.warnings == [
        "config.network.routers[0]: joins no subnet of this config (give subnet ids, CIDRs or gateway IPs); "
        "router skipped"
    ]


def test_router_entries_naming_no_subnet_are_skipped_and_a_router_left_with_none_too() -> None:
    cfg = base()
    cfg.network.routers.add(subnets=["string"])  # Merak's teste2e
    cfg.network.routers.add(subnets=["s1", "string", "10.9.0.0/24"])
    skips = Skips()
    (router,) = spec_from_proto(cfg, skips).routers
    assert (router.vpc, router.subnets) == (0, (1,))
    assert skips.warnings == [
        "config.network.routers[0].subnets[0]: 'string' names no subnet of this config "
        "(give its id, CIDR or gateway IP); skipped",
        "config.network.routers[0]: joins no subnet of this config (give subnet ids, CIDRs or gateway IPs); "
        "router skipped",
        "config.network.routers[1].subnets[1]: 'string' names no subnet of this config "
        "(give its id, CIDR or gateway IP); skipped",
        "config.network.routers[1].subnets[2]: '10.9.0.0/24' names no subnet of this config "
        "(give its id, CIDR or gateway IP); skipped",
    ]
    with pytest.raises(InvalidArgument) as caught:
        spec_from_proto(cfg, Skips(strict=True))
    assert caught.value.field == "config.network.routers[0].subnets[0]"


def test_a_router_across_two_vpcs_is_still_refused() -> None:
    cfg = base()
    other = cfg.network.vpcs.add(vpc_id="w", vpc_cidr="10.2.0.0/16")
    other.subnets.add(subnet_id="o0", subnet_cidr="10.2.0.0/24")
    cfg.network.routers.add(subnets=["s0", "o0"])
    assert invalid(cfg).startswith("config.network.routers[0].subnets: names subnets of vpcs[0] and vpcs[1]")


def test_a_vpc_without_a_cidr_gets_the_smallest_network_holding_its_subnets() -> None:
    cfg = base()
    cfg.network.vpcs[0].vpc_cidr = ""
    cfg.network.vpcs[0].subnets.add(subnet_id="s2", subnet_cidr="10.1.6.0/24")
    skips = Skips()
    assert spec_from_proto(cfg, skips).vpcs[0].cidr == "10.1.0.0/21"
    assert skips.warnings == [
        "config.network.vpcs[0].vpc_cidr: not given; 10.1.0.0/21, the smallest network holding its subnets, "
        "is used"
    ]
    # A note, not a skip: the strict check fills it in too.
    assert spec_from_proto(cfg, Skips(strict=True)).vpcs[0].cidr == "10.1.0.0/21"
    bare = network_pb2.InternalNetConfigConfiguration(netconfig_id="nc")
    bare.network.vpcs.add(vpc_id="v")
    assert invalid(bare).startswith("config.network.vpcs[0].vpc_cidr: required when the VPC has no subnets")


def test_a_subnet_cidr_with_host_bits_set_means_its_network() -> None:
    cfg = base()
    cfg.network.vpcs[0].subnets[1].subnet_cidr = "10.1.16.7/20"  # Merak's Postman: 10.0.1.0/20
    cfg.network.vpcs[0].subnets[1].subnet_gw = ""
    skips = Skips()
    subnet = spec_from_proto(cfg, skips).vpcs[0].subnets[1]
    assert (subnet.cidr, subnet.gateway) == ("10.1.16.0/20", "10.1.16.1")
    assert skips.warnings == [
        "config.network.vpcs[0].subnets[1].subnet_cidr: '10.1.16.7/20' has host bits set; "
        "10.1.16.0/20 is used"
    ]
    # Its network must still lie in the VPC and apart from the others.
    cfg.network.vpcs[0].subnets[1].subnet_cidr = "10.1.0.9/23"
    assert (
        invalid(cfg) == "config.network.vpcs[0].subnets[1].subnet_cidr: 10.1.0.0/23 overlaps subnets[0] "
        "(10.1.0.0/24)"
    )


def test_an_id_that_is_not_an_id_is_replaced_and_said() -> None:
    cfg = base()
    cfg.network.vpcs[0].vpc_id = "10.1.0.0/16"  # Merak's teste2e
    cfg.network.vpcs[0].subnets[0].subnet_id = "s 0"
    skips = Skips()
    vpc = spec_from_proto(cfg, skips).vpcs[0]
    assert (vpc.id, vpc.subnets[0].id, vpc.subnets[1].id) == ("", "", "s1")  # "": the plugin assigns one
    assert len(skips.warnings) == 2
    assert skips.warnings[0].startswith("config.network.vpcs[0].vpc_id: '10.1.0.0/16' is not an id (1-128 of")
    assert skips.warnings[1].startswith("config.network.vpcs[0].subnets[0].subnet_id: 's 0' is not an id")
    assert all(w.endswith("; an id is assigned") for w in skips.warnings)


def test_gateways_are_not_emulated_and_said() -> None:
    cfg = base()
    cfg.network.gateways.add(id="gw", ips=["10.1.0.254"])
    cfg.network.gateways.add(id="gw2")
    skips = Skips()
    spec = spec_from_proto(cfg, skips)
    assert spec == spec_from_proto(base())
    assert skips.warnings == [
        "config.network.gateways: 2 gateway(s): not emulated (Merak's network did not make them); ignored"
    ]


def test_cidr_limits_and_duplicates() -> None:
    cfg = base()
    cfg.network.vpcs[0].subnets[0].subnet_cidr = "10.1.0.0/31"
    assert "between /8 and /30" in invalid(cfg)
    cfg = base()
    cfg.network.vpcs[0].vpc_cidr = "fd00::/64"
    assert invalid(cfg) == "config.network.vpcs[0].vpc_cidr: 'fd00::/64': only IPv4 is supported"
    cfg = base()
    cfg.network.vpcs[0].subnets[1].subnet_id = "s0"
    assert (
        invalid(cfg)
        == "config.network.vpcs[0].subnets[1].subnet_id: 's0' is already the id of vpcs[0].subnets[0]"
    )
    cfg = base()
    cfg.computes.add(id="n", name="a")
    cfg.computes.add(name="n")
    assert invalid(cfg) == "config.computes[1].id: 'n' is already the id of computes[0]"
    cfg = base()
    cfg.computes.add(id="n", datapath_ip="10.0.0.300")
    assert invalid(cfg) == "config.computes[0].datapath_ip: '10.0.0.300' is not an IPv4 address"


def test_update_may_only_add() -> None:
    old = spec_from_proto(base())
    grown = base()
    grown.network.vpcs[0].subnets.add(subnet_cidr="10.1.2.0/24")
    grown.network.security_groups.add(name="db")
    grown.computes.add(id="n1")
    check_extends(old, spec_from_proto(grown))
    renamed = base()
    renamed.network.security_groups[0].name = "www"
    with pytest.raises(InvalidArgument) as caught:
        check_extends(old, spec_from_proto(renamed))
    assert caught.value.field == "config.network.security_groups[0]"
    moved = base()
    moved.network.vpcs[0].subnets[1].subnet_gw = ""
    with pytest.raises(InvalidArgument) as caught:
        check_extends(old, spec_from_proto(moved))
    assert caught.value.field == "config.network.vpcs[0].subnets[1]"
    other = base()
    other.plugin = "alcor"
    other.services.add(cmd="alcorIp", url="10.0.0.5", where_to_run="NETWORK")
    with pytest.raises(InvalidArgument):
        check_extends(old, spec_from_proto(other))


def test_port_mac_is_unique_per_address_and_never_a_vhost_or_gateway_mac() -> None:
    assert port_mac(0x123456, "10.1.0.2") == "06:56:0a:01:00:02"
    macs = {port_mac(5000, f"10.1.{i // 256}.{i % 256}") for i in range(4096)}
    assert len(macs) == 4096
    first_octet = int(port_mac(5000, "10.1.0.2")[:2], 16)
    assert first_octet & 0x02 and not first_octet & 0x01  # locally administered, unicast


def test_subnet_capacity_leaves_out_network_broadcast_and_gateway() -> None:
    subnet = SubnetState("s", "10.9.0.0/29", "10.9.0.6", 0, 0)
    assert (subnet.size, subnet.capacity, subnet.gateway_offset) == (8, 8 - RESERVED_PER_SUBNET, 6)
    assert common_pb2.InternalSubnetInfo(capacity=subnet.capacity).capacity == 5


def test_spec_checks_the_ovn_remotes() -> None:
    config = network_pb2.InternalNetConfigConfiguration(
        netconfig_id="nc", plugin="ovn", ovn_nb="tcp:10.0.0.5:6641"
    )
    config.network.vpcs.add(vpc_cidr="10.1.0.0/16").subnets.add(subnet_cidr="10.1.0.0/24")
    spec = spec_from_proto(config)
    assert (spec.ovn_nb, spec.ovn_sb) == ("tcp:10.0.0.5:6641", "")
    config.ovn_sb = "tcp:db:6642"
    with pytest.raises(InvalidArgument) as caught:
        spec_from_proto(config)
    assert caught.value.field == "config.ovn_sb"
    config.ovn_sb = "unix:/run/ovn/ovnsb_db.sock"
    moved = network_pb2.InternalNetConfigConfiguration()
    moved.CopyFrom(config)
    moved.ovn_nb = "tcp:10.0.0.6:6641"
    with pytest.raises(InvalidArgument) as caught:
        check_extends(spec_from_proto(config), spec_from_proto(moved))
    assert caught.value.field == "config.ovn_nb"


def exhausted(cfg: network_pb2.InternalNetConfigConfiguration) -> str:
    with pytest.raises(ResourceExhausted) as caught:
        spec_from_proto(cfg)
    return caught.value.message


def test_sizes_are_bounded_before_any_loop_over_them() -> None:
    cfg = base()  # #28: 0.0.0.0/0 cut into sixteen /8 subnets was accepted (Redis grew by 56 MB)
    cfg.network.vpcs[0].vpc_cidr = "0.0.0.0/0"
    del cfg.network.vpcs[0].subnets[:]
    for k in range(16):
        cfg.network.vpcs[0].subnets.add(subnet_cidr=f"{k * 16}.0.0.0/8")
    message = exhausted(cfg)
    assert message.startswith(
        "config.network.vpcs[0].subnets[4].subnet_cidr: the config's subnets would hold"
    )
    del cfg.network.vpcs[0].subnets[4:]
    assert len(spec_from_proto(cfg).vpcs[0].subnets) == 4  # four /8s: the most one config holds
    many = base()
    for _ in range(MAX_VPCS):
        many.network.vpcs.add(vpc_cidr="10.9.0.0/16")
    assert exhausted(many).startswith(f"config.network.vpcs: {MAX_VPCS + 1} VPCs; at most {MAX_VPCS}")
    subnets = base()
    for k in range(MAX_SUBNETS):
        subnets.network.vpcs[0].subnets.add(subnet_cidr=f"10.{k >> 8 & 255}.{k & 255}.0/30")
    assert "subnets; at most" in exhausted(subnets)


def test_overlapping_subnets_are_found_among_many_in_order() -> None:
    cfg = base()
    vpc = cfg.network.vpcs[0]
    vpc.vpc_cidr = "10.0.0.0/8"
    del vpc.subnets[:]
    for k in range(4000):
        vpc.subnets.add(subnet_cidr=f"10.{k >> 8}.{k & 255}.0/24")
    vpc.subnets.add(subnet_cidr="10.3.0.0/16")  # over 256 of them
    assert (
        invalid(cfg)
        == "config.network.vpcs[0].subnets[4000].subnet_cidr: 10.3.0.0/16 overlaps subnets[768] (10.3.0.0/24)"
    )
    vpc.subnets[4000].subnet_cidr = "10.200.0.0/16"
    assert len(spec_from_proto(cfg).vpcs[0].subnets) == 4001


def test_host_blocks_are_off_by_default_and_fit_every_subnet() -> None:
    assert spec_from_proto(base()).block_prefix == 0
    cfg = base()
    cfg.block_prefix = 24  # a block as large as the subnets: one block each
    assert spec_from_proto(cfg).block_prefix == 24
    cfg.network.vpcs[0].subnets.add(subnet_id="s2", subnet_cidr="10.1.2.0/25")
    assert invalid(cfg).startswith(
        "config.block_prefix: /24 blocks do not fit in config.network.vpcs[0].subnets[2] (10.1.2.0/25)"
    )
    for bad in (7, 30, 32):
        cfg.block_prefix = bad
        assert invalid(cfg).startswith(f"config.block_prefix: /{bad}: a block is /8 to /29")
    cfg.block_prefix = 26
    cfg.plugin = "ovn"
    assert "only the native plugin" in invalid(cfg)
    grown, before = base(), base()
    grown.block_prefix = 26
    with pytest.raises(InvalidArgument) as caught:
        check_extends(spec_from_proto(before), spec_from_proto(grown))
    assert caught.value.field == "config.block_prefix"


def test_a_subnet_with_blocks_counts_them() -> None:
    subnet = SubnetState("s", "10.1.0.0/22", "10.1.0.1", 0, 0, block_prefix=26)
    assert (subnet.block_size, subnet.blocks, subnet.capacity) == (64, 16, 1024 - RESERVED_PER_SUBNET)
    plain = SubnetState("s", "10.1.0.0/22", "10.1.0.1", 0, 0)
    assert (plain.block_size, plain.blocks) == (0, 0)
