"""Unit tests of the topology spec validation and the data-centre generator."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pytest

from merak.errors import InvalidArgument
from merak.skips import Skips
from merak.v1 import topology_pb2
from services.topology.generator import DEFAULT_DATA_PLANE_CIDR, generate, spec_from_proto
from services.topology.limits import MAX_IFNAME
from services.topology.models import Link, NodeKind, Topology

TREE = topology_pb2.TREE


def config(**fields: Any) -> topology_pb2.InternalTopologyConfiguration:
    """The teste2e topology request, with `fields` overriding it."""
    values: dict[str, Any] = {
        "topology_id": "topo-1",
        "name": "Top1",
        "topology_type": TREE,
        "number_of_vhosts": 5,
        "number_of_racks": 2,
        "vhost_per_rack": 5,
        "ports_per_vswitch": 5,
        "data_plane_cidr": "10.200.0.0/16",
    }
    values.update(fields)
    return topology_pb2.InternalTopologyConfiguration(**values)


VNode = tuple[str, topology_pb2.VNodeType.ValueType, Sequence[tuple[str, str]]]


def custom(
    vnodes: Sequence[VNode],
    vlinks: Sequence[tuple[str, str]],
    cidr: str = "10.0.0.0/24",
) -> topology_pb2.InternalTopologyConfiguration:
    """A CUSTOM request from (name, type, [(nic, ip)]) nodes and (src, dst) links."""
    return config(
        topology_type=topology_pb2.CUSTOM,
        number_of_vhosts=0,
        data_plane_cidr=cidr,
        vnodes=[
            topology_pb2.InternalVNodeInfo(
                name=name, type=kind, vnics=[topology_pb2.InternalVNicInfo(name=n, ip=ip) for n, ip in nics]
            )
            for name, kind, nics in vnodes
        ],
        vlinks=[
            topology_pb2.InternalVLinkInfo(name=f"l{i}", src=src, dst=dst)
            for i, (src, dst) in enumerate(vlinks)
        ],
    )


def build(cfg: topology_pb2.InternalTopologyConfiguration) -> Topology:
    """Validate and generate."""
    return generate(spec_from_proto(cfg))


def invalid(cfg: topology_pb2.InternalTopologyConfiguration) -> InvalidArgument:
    """The InvalidArgument that validating or generating `cfg` raises."""
    with pytest.raises(InvalidArgument) as caught:
        build(cfg)
    return caught.value


def nic_names(topology: Topology, name: str) -> list[str]:
    """The NIC names of one node, in order."""
    return [nic.name for nic in topology.node(name).nics]


def check_well_formed(topology: Topology) -> None:
    """Every link joins existing NICs once; the graph is a connected tree; names fit the kernel."""
    used: set[tuple[str, str]] = set()
    for link in topology.links:
        for end, nic in ((link.a_node, link.a_nic), (link.b_node, link.b_nic)):
            assert nic in nic_names(topology, end)
            assert (end, nic) not in used
            used.add((end, nic))
    assert [link.uid for link in topology.links] == list(range(1, len(topology.links) + 1))
    for node in topology.nodes:
        names = [nic.name for nic in node.nics]
        assert len(names) == len(set(names))
        assert all(len(name) <= MAX_IFNAME for name in names)
        if node.is_switch:
            assert len(names) <= 1023
    assert len(topology.links) == len(topology.nodes) - 1
    assert connected(topology)


def connected(topology: Topology) -> bool:
    """Whether every node is reachable from the first."""
    adjacent: dict[str, list[str]] = defaultdict(list)
    for link in topology.links:
        adjacent[link.a_node].append(link.b_node)
        adjacent[link.b_node].append(link.a_node)
    seen = {topology.nodes[0].name}
    stack = [topology.nodes[0].name]
    while stack:
        for peer in adjacent[stack.pop()]:
            if peer not in seen:
                seen.add(peer)
                stack.append(peer)
    return len(seen) == len(topology.nodes)


# --- TREE ------------------------------------------------------------------------------------------------


def test_teste2e_example_is_reproduced_exactly() -> None:
    topology = build(config())

    assert [(n.name, n.kind) for n in topology.nodes] == [
        *((f"vhost-{j}", NodeKind.VHOST) for j in range(5)),
        ("rack-1", NodeKind.RACK),
        ("vs-1", NodeKind.VSWITCH),
        ("core-1", NodeKind.CORE),
    ]
    for j in range(5):
        assert [(nic.name, nic.ip) for nic in topology.node(f"vhost-{j}").nics] == [
            (f"vh{j}-eth1", f"10.200.0.{j + 1}/16")
        ]
        assert topology.datapath_ip(f"vhost-{j}") == f"10.200.0.{j + 1}"
    assert nic_names(topology, "rack-1") == [f"r1-eth{p}" for p in range(1, 7)]
    assert nic_names(topology, "vs-1") == ["vs1-eth1", "vs1-eth2"]
    assert nic_names(topology, "core-1") == ["c1-eth1"]
    assert all(nic.ip == "" for node in topology.switches() for nic in node.nics)
    assert topology.links == (
        *(Link(j + 1, "rack-1", f"r1-eth{j + 1}", f"vhost-{j}", f"vh{j}-eth1") for j in range(5)),
        Link(6, "vs-1", "vs1-eth1", "rack-1", "r1-eth6"),
        Link(7, "core-1", "c1-eth1", "vs-1", "vs1-eth2"),
    )


def test_last_rack_takes_the_remainder() -> None:
    topology = build(config(number_of_vhosts=7, number_of_racks=0))

    assert nic_names(topology, "rack-1") == [f"r1-eth{p}" for p in range(1, 7)]
    assert nic_names(topology, "rack-2") == ["r2-eth1", "r2-eth2", "r2-eth3"]
    assert [n.name for n in topology.nodes if n.kind is NodeKind.RACK] == ["rack-1", "rack-2"]
    assert Link(6, "rack-2", "r2-eth1", "vhost-5", "vh5-eth1") in topology.links
    assert Link(7, "rack-2", "r2-eth2", "vhost-6", "vh6-eth1") in topology.links
    # One vswitch groups both racks' uplinks.
    assert Link(9, "vs-1", "vs1-eth2", "rack-2", "r2-eth3") in topology.links
    check_well_formed(topology)


def test_unused_racks_are_not_created() -> None:
    topology = build(config(number_of_vhosts=3, number_of_racks=10))

    assert [n.name for n in topology.nodes if n.kind is NodeKind.RACK] == ["rack-1"]


def test_deep_tree_is_a_connected_tree_with_one_core() -> None:
    topology = build(config(number_of_vhosts=1000, number_of_racks=0, vhost_per_rack=2, ports_per_vswitch=2))

    assert len(topology.vhosts()) == 1000
    assert [n.name for n in topology.nodes if n.kind is NodeKind.CORE] == ["core-1"]
    # 500 racks -> 250 -> 125 -> 63 -> 32 -> 16 -> 8 -> 4 -> 2 vswitches.
    vswitches = sum(1 for n in topology.nodes if n.kind is NodeKind.VSWITCH)
    assert vswitches == 250 + 125 + 63 + 32 + 16 + 8 + 4 + 2
    assert nic_names(topology, "core-1") == ["c1-eth1", "c1-eth2"]
    check_well_formed(topology)


def test_wide_switches_stay_within_bridge_port_limit() -> None:
    topology = build(
        config(
            number_of_vhosts=5000,
            number_of_racks=0,
            vhost_per_rack=1022,
            ports_per_vswitch=1022,
            data_plane_cidr="10.0.0.0/8",
        )
    )

    assert nic_names(topology, "rack-1")[-1] == "r1-eth1023"
    check_well_formed(topology)


def test_host_bits_in_the_cidr_are_normalised() -> None:
    spec = spec_from_proto(config(data_plane_cidr="10.200.7.9/16"))

    assert spec.data_plane_cidr == "10.200.0.0/16"
    assert generate(spec).datapath_ip("vhost-0") == "10.200.0.1"


def test_spec_defaults_and_short_id() -> None:
    spec = spec_from_proto(config())

    assert (spec.backend, spec.dataplane) == ("local", "real")
    assert len(spec.short_id) == 6
    assert spec.short_id != spec_from_proto(config(topology_id="topo-2")).short_id
    assert spec_from_proto(config(backend="kubernetes", dataplane="fake")).dataplane == "fake"


def test_dummy_vnodes_are_ignored_outside_custom_with_a_warning() -> None:
    cfg = config(
        vnodes=[topology_pb2.InternalVNodeInfo(name="Not A Valid Name!")],
        vlinks=[topology_pb2.InternalVLinkInfo(name="string", src="string", dst="string")],
    )
    skips = Skips()

    spec = spec_from_proto(cfg, skips)

    assert (spec.vnodes, spec.vlinks) == ((), ())
    assert skips.warnings == [
        "config.vnodes: 1 vnode(s) and 1 vlink(s) with a TREE topology: only a CUSTOM topology is made of "
        "vnodes and vlinks; ignored"
    ]
    assert generate(spec) == build(config())


def test_control_plane_gateways_are_ignored_with_a_warning() -> None:
    cfg = config(number_of_gateways=1, gateway_ips=["string", "10.0.0.1"])  # Merak's teste2e: ["string"]
    skips = Skips()

    assert generate(spec_from_proto(cfg, skips)) == build(config())
    assert skips.warnings == [
        "config.gateway_ips: 2 control-plane gateway(s): not emulated (Merak's topology did not build them "
        "either); ignored"
    ]
    with pytest.raises(InvalidArgument) as caught:
        spec_from_proto(cfg, Skips(strict=True))
    assert caught.value.field == "config.gateway_ips"


def test_images_are_ignored_on_the_local_backend_only() -> None:
    images = [topology_pb2.InternalTopologyImage(id="i", name="ACA", registry="meraksim/merak-agent:dev")]
    local = Skips()
    spec_from_proto(config(images=images), local)
    assert local.warnings == [
        "config.images: 1 image(s): the local backend runs no containers (kubernetes does); ignored"
    ]
    kubernetes = Skips()
    spec_from_proto(config(images=images, backend="kubernetes"), kubernetes)
    assert kubernetes.warnings == []


def test_a_well_formed_request_has_no_warnings() -> None:
    skips = Skips()
    spec_from_proto(config(), skips)
    spec_from_proto(custom([("h", topology_pb2.VHOST, [("eth1", "")])], []), skips)

    assert skips.warnings == []


def test_a_slash_24_holds_254_vhosts() -> None:
    topology = build(config(number_of_vhosts=100, number_of_racks=0, data_plane_cidr="192.168.1.0/24"))

    assert topology.datapath_ip("vhost-99") == "192.168.1.100"
    edge = build(config(number_of_vhosts=254, number_of_racks=0, data_plane_cidr="192.168.1.0/24"))
    assert edge.node("vhost-253").nics[0].ip == "192.168.1.254/24"


@pytest.mark.parametrize(
    ("cidr", "holds"), [("192.168.1.0/24", "254"), ("10.0.0.0/31", "0"), ("10.0.0.1/32", "0")]
)
def test_too_small_cidr_is_invalid(cidr: str, holds: str) -> None:
    error = invalid(config(number_of_vhosts=300, number_of_racks=0, data_plane_cidr=cidr))

    assert error.field == "config.data_plane_cidr"
    assert f"holds {holds} " in error.problem
    assert "300" in error.problem


def test_a_generated_type_without_a_data_plane_cidr_gets_the_default_and_says_so() -> None:
    skips = Skips()

    spec = spec_from_proto(config(data_plane_cidr=""), skips)

    assert spec.data_plane_cidr == DEFAULT_DATA_PLANE_CIDR == "10.200.0.0/16"
    assert generate(spec).datapath_ip("vhost-4") == "10.200.0.5"
    assert skips.warnings == ["config.data_plane_cidr: not given; 10.200.0.0/16 is used"]


def test_a_default_data_plane_cidr_too_small_for_the_vhosts_is_invalid() -> None:
    skips = Skips()
    with pytest.raises(InvalidArgument) as caught:
        spec_from_proto(config(data_plane_cidr="", number_of_vhosts=70_000, number_of_racks=0), skips)

    assert caught.value.field == "config.data_plane_cidr"
    assert "10.200.0.0/16 holds 65534 vhost addresses, but 70000" in caught.value.problem
    assert skips.warnings == []


@pytest.mark.parametrize(("vhosts", "ports", "racks"), [(20, 4, 4), (3, 2, 1), (5000, 1000, 1000)])
def test_a_tree_without_ports_per_vswitch_gets_one_vswitch_over_its_racks(
    vhosts: int, ports: int, racks: int
) -> None:
    skips = Skips()

    spec = spec_from_proto(config(number_of_vhosts=vhosts, number_of_racks=0, ports_per_vswitch=0), skips)

    assert spec.ports_per_vswitch == ports
    assert skips.warnings == [
        f"config.ports_per_vswitch: not given; {ports} is used (one vswitch over the {racks} racks)"
    ]
    topology = generate(spec)
    check_well_formed(topology)
    vswitches = [n.name for n in topology.nodes if n.kind is NodeKind.VSWITCH]
    assert vswitches == ["vs-1"]


def test_a_tree_without_ports_per_vswitch_and_more_racks_than_a_bridge_holds_gets_full_vswitches() -> None:
    skips = Skips()

    spec = spec_from_proto(
        config(number_of_vhosts=10_000, number_of_racks=0, ports_per_vswitch=0, data_plane_cidr="10.0.0.0/8"),
        skips,
    )

    assert spec.ports_per_vswitch == 1022
    (warning,) = skips.warnings
    assert warning.startswith("config.ports_per_vswitch: not given; 1022 is used")
    check_well_formed(generate(spec))


@pytest.mark.parametrize("cidr", ["10.200.0.0", "10.200.0.0/33", "10.300.0.0/16", "fd00::/64", "x/8"])
def test_malformed_cidr_is_invalid(cidr: str) -> None:
    assert invalid(config(data_plane_cidr=cidr)).field == "config.data_plane_cidr"


@pytest.mark.parametrize("vhosts", [0, 1_000_001, 2_000_000])
def test_vhost_count_out_of_range_is_invalid(vhosts: int) -> None:
    error = invalid(config(number_of_vhosts=vhosts, number_of_racks=0, data_plane_cidr="10.0.0.0/8"))

    assert error.field == "config.number_of_vhosts"


def test_too_few_racks_is_invalid() -> None:
    error = invalid(config(number_of_vhosts=12, number_of_racks=2, vhost_per_rack=5))

    assert error.field == "config.number_of_racks"
    assert "10" in error.problem
    assert "12" in error.problem


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"vhost_per_rack": 0}, "config.vhost_per_rack"),
        ({"vhost_per_rack": 1023}, "config.vhost_per_rack"),
        ({"ports_per_vswitch": 1}, "config.ports_per_vswitch"),
        ({"ports_per_vswitch": 1023}, "config.ports_per_vswitch"),
        ({"topology_id": ""}, "config.topology_id"),
        ({"topology_id": "a" * 65}, "config.topology_id"),
        ({"topology_id": "topo 1"}, "config.topology_id"),
        ({"dataplane": "virtual"}, "config.dataplane"),
        ({"topology_type": topology_pb2.REVERSED}, "config.topology_type"),
        ({"topology_type": topology_pb2.MESH}, "config.topology_type"),
    ],
)
def test_invalid_fields(fields: dict[str, Any], field: str) -> None:
    assert invalid(config(**fields)).field == field


def test_unsupported_type_lists_the_supported_ones() -> None:
    problem = invalid(config(topology_type=topology_pb2.MESH)).problem

    assert "MESH" in problem
    assert all(name in problem for name in ("SINGLE", "LINEAR", "TREE", "CUSTOM"))


def test_generation_is_deterministic() -> None:
    cfg = config(number_of_vhosts=777, number_of_racks=0, vhost_per_rack=7, ports_per_vswitch=3)

    assert build(cfg) == build(cfg)


def test_a_hundred_thousand_vhosts() -> None:
    topology = build(
        config(
            number_of_vhosts=100_000,
            number_of_racks=0,
            vhost_per_rack=50,
            ports_per_vswitch=32,
            data_plane_cidr="10.0.0.0/8",
        )
    )

    assert len(topology.vhosts()) == 100_000
    assert topology.datapath_ip("vhost-99999") == "10.1.134.160"
    assert sum(1 for n in topology.nodes if n.kind is NodeKind.RACK) == 2000


# --- LINEAR and SINGLE -----------------------------------------------------------------------------------


def test_linear_is_a_chain_of_switches_with_one_vhost_each() -> None:
    topology = build(config(topology_type=topology_pb2.LINEAR, number_of_vhosts=3))

    assert [n.name for n in topology.nodes] == ["vhost-0", "vhost-1", "vhost-2", "vs-1", "vs-2", "vs-3"]
    assert nic_names(topology, "vs-1") == ["vs1-eth1", "vs1-eth3"]
    assert nic_names(topology, "vs-2") == ["vs2-eth1", "vs2-eth2", "vs2-eth3"]
    assert nic_names(topology, "vs-3") == ["vs3-eth1", "vs3-eth2"]
    assert topology.links == (
        Link(1, "vs-1", "vs1-eth1", "vhost-0", "vh0-eth1"),
        Link(2, "vs-2", "vs2-eth1", "vhost-1", "vh1-eth1"),
        Link(3, "vs-3", "vs3-eth1", "vhost-2", "vh2-eth1"),
        Link(4, "vs-1", "vs1-eth3", "vs-2", "vs2-eth2"),
        Link(5, "vs-2", "vs2-eth3", "vs-3", "vs3-eth2"),
    )
    check_well_formed(topology)


def test_linear_with_one_vhost_has_no_chain() -> None:
    topology = build(config(topology_type=topology_pb2.LINEAR, number_of_vhosts=1))

    assert nic_names(topology, "vs-1") == ["vs1-eth1"]
    assert topology.links == (Link(1, "vs-1", "vs1-eth1", "vhost-0", "vh0-eth1"),)


def test_single_attaches_every_vhost_to_one_switch() -> None:
    topology = build(config(topology_type=topology_pb2.SINGLE, number_of_vhosts=4))

    assert [n.name for n in topology.switches()] == ["vs-1"]
    assert topology.links == tuple(
        Link(j + 1, "vs-1", f"vs1-eth{j + 1}", f"vhost-{j}", f"vh{j}-eth1") for j in range(4)
    )
    check_well_formed(topology)


def test_single_is_limited_to_one_bridge() -> None:
    error = invalid(config(topology_type=topology_pb2.SINGLE, number_of_vhosts=1023))

    assert error.field == "config.number_of_vhosts"


# --- CUSTOM ----------------------------------------------------------------------------------------------

VHOST = topology_pb2.VHOST
VSWITCH = topology_pb2.VSWITCH


ALL_TYPES: list[VNode] = [
    ("h1", VHOST, [("h1-e0", "10.0.0.1/24")]),
    ("h2", VHOST, []),
    ("s1", VSWITCH, [("s1-p1", ""), ("s1-p2", "")]),
    ("gw", topology_pb2.VGATEWAY, []),
    ("r1", topology_pb2.VROUTER, [("r1-in", "192.168.0.1/30")]),
]
LINKS = [("s1", "h2"), ("h1-e0", "s1-p1"), ("s1", "gw"), ("r1-in", "gw")]


def test_custom_resolves_nics_and_addresses() -> None:
    topology = build(custom(ALL_TYPES, LINKS))

    assert [(n.name, n.kind) for n in topology.nodes] == [
        ("h1", NodeKind.VHOST),
        ("h2", NodeKind.VHOST),
        ("s1", NodeKind.VSWITCH),
        ("gw", NodeKind.GATEWAY),
        ("r1", NodeKind.ROUTER),
    ]
    # s1-p1 is named by a later vlink, so the node-name endpoint "s1" takes s1-p2; then a new NIC.
    assert topology.links == (
        Link(1, "s1", "s1-p2", "h2", "h2-eth1"),
        Link(2, "h1", "h1-e0", "s1", "s1-p1"),
        Link(3, "s1", "s1-eth3", "gw", "gw-eth1"),
        Link(4, "r1", "r1-in", "gw", "gw-eth2"),
    )
    assert topology.datapath_ip("h1") == "10.0.0.1"
    # The declared 10.0.0.1 is skipped.
    assert topology.node("h2").nics[0].ip == "10.0.0.2/24"
    assert topology.node("r1").nics[0].ip == "192.168.0.1/30"
    assert all(nic.ip == "" for nic in topology.node("s1").nics)
    assert topology.spec.number_of_vhosts == 2
    check_well_formed(topology)
    assert build(custom(ALL_TYPES, LINKS)) == build(custom(ALL_TYPES, LINKS))


@pytest.mark.parametrize(
    ("vnodes", "vlinks", "field"),
    [
        ([], [], "config.vnodes"),
        ([("h1", VHOST, [])], [("h1", "s9")], "config.vlinks[0].dst"),
        ([("h1", VHOST, []), ("h2", VHOST, [])], [("h1", "h2"), ("", "h1")], "config.vlinks[1].src"),
        ([("h1", VHOST, []), ("h1", VSWITCH, [])], [], "config.vnodes[1].name"),
        ([("h1", VHOST, []), ("s1", VSWITCH, [])], [("s1", "h1"), ("h1", "h1")], "config.vlinks[1].dst"),
        ([("h1", VHOST, [("e1", ""), ("e2", "")])], [("e1", "e2")], "config.vlinks[0].dst"),
        (
            [("h1", VHOST, [("e1", "")]), ("s1", VSWITCH, []), ("s2", VSWITCH, [])],
            [("e1", "s1"), ("s2", "e1")],
            "config.vlinks[1].dst",
        ),
        ([("H1", VHOST, [])], [], "config.vnodes[0].name"),
        ([("h_1", VHOST, [])], [], "config.vnodes[0].name"),
        ([("a" * 33, VHOST, [])], [], "config.vnodes[0].name"),
        ([("h1", VHOST, [("eth.0", "")])], [], "config.vnodes[0].vnics[0].name"),
        ([("h1", VHOST, [("e" * 16, "")])], [], "config.vnodes[0].vnics[0].name"),
        ([("h1", VHOST, [("e0", "")]), ("h2", VHOST, [("e0", "")])], [], "config.vnodes[1].vnics[0].name"),
        ([("h1", VHOST, [("h2", "")]), ("h2", VHOST, [])], [], "config.vnodes[1].name"),
        ([("h1", VHOST, [("e0", "10.0.0.300/24")])], [], "config.vnodes[0].vnics[0].ip"),
        ([("h1", VHOST, [("e0", "10.0.0.1")])], [], "config.vnodes[0].vnics[0].ip"),
        ([("h1", VHOST, [("e0", "10.0.0.0/24")])], [], "config.vnodes[0].vnics[0].ip"),
        (
            [("h1", VHOST, [("e0", "10.0.0.9/24")]), ("h2", VHOST, [("e1", "10.0.0.9/16")])],
            [],
            "config.vnodes[1].vnics[0].ip",
        ),
        ([("h1", VHOST, [])], [], "config.vnodes[0].vnics"),
        (
            [("host-with-long-name", VHOST, []), ("s1", VSWITCH, [])],
            [("s1", "host-with-long-name")],
            "config.vlinks[0].dst",
        ),
    ],
    ids=[
        "no-vnodes",
        "unknown-endpoint",
        "empty-endpoint",
        "duplicate-node",
        "self-link-by-node",
        "self-link-by-nic",
        "nic-reused",
        "uppercase-node",
        "underscore-node",
        "long-node",
        "bad-nic-chars",
        "long-nic",
        "duplicate-nic",
        "node-named-like-nic",
        "bad-ip",
        "ip-without-prefix",
        "network-address-ip",
        "duplicate-ip",
        "vhost-without-nic",
        "auto-nic-name-too-long",
    ],
)
def test_custom_errors(vnodes: Sequence[VNode], vlinks: Sequence[tuple[str, str]], field: str) -> None:
    assert invalid(custom(vnodes, vlinks)).field == field


def test_custom_vhost_addresses_must_fit_the_cidr() -> None:
    nodes = [(f"h{i}", VHOST, [(f"h{i}-e0", "")]) for i in range(3)]

    error = invalid(custom(nodes, [], cidr="10.0.0.0/30"))
    assert error.field == "config.data_plane_cidr"
    assert "holds 2" in error.problem
    assert invalid(custom(nodes, [], cidr="")).field == "config.data_plane_cidr"
    # With every address declared no CIDR is needed.
    declared = [(f"h{i}", VHOST, [(f"h{i}-e0", f"10.9.0.{i + 1}/24")]) for i in range(3)]
    assert build(custom(declared, [], cidr="")).datapath_ip("h2") == "10.9.0.3"


def test_custom_unknown_vnode_type_is_invalid() -> None:
    assert (
        invalid(custom([("h1", topology_pb2.VNodeType.ValueType(9), [])], [])).field
        == "config.vnodes[0].type"
    )
