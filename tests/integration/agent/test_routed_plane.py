"""A routed VPC (docs/routed-overlay.md) on real namespaces: three vhosts, per-vhost address blocks routed
through IPv6 link-local next hops on an L3 vx<vni>, proxy ARP on br0, two VPCs with overlapping CIDRs."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from merak import netns
from merak.errors import FailedPrecondition
from services.agent.models import RoutedPeer, SubnetSpec, VmSpec, VpcSpec
from services.agent.netlink_bulk import RTPROT_STATIC
from services.agent.planes.real.vpcs import vtep_link_local, vtep_mac
from tests.integration.agent.test_real_plane import (
    UNDERLAY_NET,
    Vhost,
    assert_no_pings,
    assert_pings,
    fdb,
    in_ns,
    lab,
    permanent_neighbours,
    read_sysctl_elsewhere,
)

pytestmark = pytest.mark.root

# VPC A: two subnets. VPC B: A's first subnet again, and the underlay's range (its gateway is h0's VTEP).
VPC_A = VpcSpec(
    "vpc-ra",
    6001,
    (SubnetSpec("10.1.0.0/24", "10.1.0.1"), SubnetSpec("10.1.1.0/24", "10.1.1.1")),
    "02:00:00:00:60:01",
    routed=True,
)
VPC_B = VpcSpec(
    "vpc-rb",
    6002,
    (SubnetSpec("10.1.0.0/24", "10.1.0.1"), SubnetSpec(f"{UNDERLAY_NET}.0/24", f"{UNDERLAY_NET}.1")),
    "02:00:00:00:60:02",
    routed=True,
)
# The blocks each vhost holds, per VPC; h2 borrowed 10.1.0.30 (in h0's block of A) and, in B, the address
# of h1's VTEP.
BLOCKS = {
    VPC_A.vni: [["10.1.0.0/26", "10.1.1.0/26"], ["10.1.0.64/26"], ["10.1.1.128/26", "10.1.0.30/32"]],
    VPC_B.vni: [["10.1.0.0/26"], ["10.1.0.64/26"], [f"{UNDERLAY_NET}.128/26", f"{UNDERLAY_NET}.2/32"]],
}


def vm(name: str, vpc: VpcSpec, ip: str, index: int) -> VmSpec:
    """A /24 VM of `vpc` whose gateway is the .1 of its subnet."""
    mac = f"02:1{vpc.vni % 10}:00:00:00:{index:02x}"
    return VmSpec(name, vpc.vpc_id, vpc.vni, ip, 24, mac, ip.rsplit(".", 1)[0] + ".1")


SPECS = [
    [vm("a0", VPC_A, "10.1.0.10", 1), vm("a0s", VPC_A, "10.1.1.20", 2), vm("b0", VPC_B, "10.1.0.10", 3)],
    [vm("a1", VPC_A, "10.1.0.70", 4), vm("b1", VPC_B, "10.1.0.75", 5)],
    [
        vm("a2", VPC_A, "10.1.1.140", 6),
        vm("a2b", VPC_A, "10.1.0.30", 7),
        vm("b2", VPC_B, f"{UNDERLAY_NET}.130", 8),
        vm("b2v", VPC_B, f"{UNDERLAY_NET}.2", 9),  # h1's VTEP address, as a VM of VPC B on h2
    ],
]


def peers_of(vhosts: list[Vhost], h: int, vni: int) -> list[RoutedPeer]:
    """Every other vhost of the lab with its blocks of `vni`."""
    return [RoutedPeer(v.ip, tuple(BLOCKS[vni][i])) for i, v in enumerate(vhosts) if i != h]


def program(vhosts: list[Vhost]) -> None:
    """Each vhost's routed peers for both VPCs, and its own blocks."""
    for h, vhost in enumerate(vhosts):
        for vni in (VPC_A.vni, VPC_B.vni):
            vhost.dp.set_routed_peers(vni, peers_of(vhosts, h, vni), BLOCKS[vni][h])


@dataclass
class RoutedLab:
    """Three vhosts with both routed VPCs, their VMs, the overlay programmed."""

    vhosts: list[Vhost]

    def echoes(self, h: int, name: str) -> int:
        """ICMP echo requests VM `name` on vhost `h` has answered so far (its Icmp InEchos)."""
        with netns.entered(self.vhosts[h].dp.vm_ns(name)), open("/proc/thread-self/net/snmp") as f:
            header, values = [line.split() for line in f if line.startswith("Icmp:")][:2]
        return int(values[header.index("InEchos")])


@pytest.fixture(scope="module")
def routed() -> Iterator[RoutedLab]:
    """The lab, built once for the read-only tests."""
    with lab(3) as vhosts:
        for h, vhost in enumerate(vhosts):
            for vpc in (VPC_A, VPC_B):
                vhost.dp.ensure_vpc(vpc)
            results = vhost.dp.create_vms(SPECS[h])
            assert all(r.ok and r.created for r in results), results
        program(vhosts)
        yield RoutedLab(vhosts)


@contextlib.contextmanager
def answered_by(world: RoutedLab, h: int, name: str, *, count: bool = True) -> Iterator[None]:
    """The block's pings reached VM `name` on vhost `h` (count=False: not one did)."""
    before = world.echoes(h, name)
    yield
    after = world.echoes(h, name)
    assert (after > before) == count, f"{name} on h{h} answered {after - before} echo requests"


# ----------------------------------------------------------------------------- connectivity


def test_same_subnet_across_vhosts_reaches_the_vm_of_its_own_vpc(routed: RoutedLab) -> None:
    h0, h1, _h2 = routed.vhosts
    with answered_by(routed, 1, "a1"):
        assert_pings(h0, "a0", ["10.1.0.70"])
    # 10.1.0.10 is a0 in VPC A and b0 in VPC B, both on h0: a1 reaches A's.
    with answered_by(routed, 0, "a0"), answered_by(routed, 0, "b0", count=False):
        assert_pings(h1, "a1", ["10.1.0.10"])


def test_across_subnets_and_vhosts_and_to_the_gateways(routed: RoutedLab) -> None:
    h0, h1, h2 = routed.vhosts
    with answered_by(routed, 2, "a2"):
        assert_pings(h0, "a0", ["10.1.1.140"])  # subnet 1 on h0 -> subnet 2 on h2
    assert_pings(h2, "a2", ["10.1.0.70", "10.1.0.10"])  # subnet 2 on h2 -> subnet 1 on h1 and h0
    with answered_by(routed, 0, "a0s"):
        assert_pings(h0, "a0", ["10.1.1.20"])  # across subnets on one vhost
    assert_pings(h1, "a1", ["10.1.0.1", "10.1.1.1"])


def test_a_borrowed_address_is_reached_from_every_vhost(routed: RoutedLab) -> None:
    h0, h1, h2 = routed.vhosts
    with answered_by(routed, 2, "a2b"):
        assert_pings(h0, "a0", ["10.1.0.30"])  # from the vhost whose block the address is in
    with answered_by(routed, 2, "a2b"):
        assert_pings(h1, "a1", ["10.1.0.30"])
    with answered_by(routed, 0, "a0"):
        assert_pings(h2, "a2b", ["10.1.0.10", "10.1.0.70"])  # and it reaches out of its /32


def test_vpcs_with_overlapping_cidrs_are_isolated(routed: RoutedLab) -> None:
    h0, h1, h2 = routed.vhosts
    with answered_by(routed, 1, "b1"):
        assert_pings(h0, "b0", ["10.1.0.75"])  # VPC B works on its own across vhosts
    with answered_by(routed, 2, "b2"), answered_by(routed, 2, "b2v"):
        # B's subnet is the underlay's range; its gateway is h0's VTEP, a VM sits at h1's.
        assert_pings(h0, "b0", [f"{UNDERLAY_NET}.130", f"{UNDERLAY_NET}.1"])
        assert_pings(h1, "b1", [f"{UNDERLAY_NET}.2"])
    with answered_by(routed, 1, "b1", count=False), answered_by(routed, 2, "b2", count=False):
        assert_no_pings(h0, "a0", ["10.1.0.75", f"{UNDERLAY_NET}.130"])  # only B has them
        assert_no_pings(h2, "a2", ["10.1.0.75"])
    with answered_by(routed, 1, "a1", count=False), answered_by(routed, 2, "a2", count=False):
        assert_no_pings(h0, "b0", ["10.1.0.70", "10.1.1.140"])  # only A has them


# ----------------------------------------------------------------------------- kernel state


def routes(ns: str) -> dict[str, tuple[str, str]]:
    """Our IPv4 routes in `ns` (proto static): prefix -> (device, IPv6 next hop or "")."""

    def read(ipr: Any) -> dict[str, tuple[str, str]]:
        names = {link["index"]: str(link.get("ifname")) for link in ipr.link("dump")}
        return {
            f"{r.get('dst')}/{r['dst_len']}": (names[r.get("oif")], str((r.get("via") or {}).get("addr", "")))
            for r in ipr.route("dump", family=socket.AF_INET)
            if r["proto"] == RTPROT_STATIC
        }

    return dict(in_ns(ns, read))


def next_hops(ns: str, dev: str) -> dict[str, str]:
    """The permanent IPv6 neighbours on `dev`: address -> MAC."""

    def read(ipr: Any) -> dict[str, str]:
        index = ipr.link_lookup(ifname=dev)[0]
        return {
            str(e.get("dst")): str(e.get("lladdr"))
            for e in ipr.neigh("dump", family=socket.AF_INET6)
            if e["ifindex"] == index
        }

    return dict(in_ns(ns, read))


def remote_macs(ns: str, dev: str) -> set[tuple[str, str]]:
    """(MAC, VTEP) of the VXLAN device's own FDB entries."""
    return {(mac, dst) for mac, dst, _, _ in fdb(ns, dev) if dst}


def overlay_state(vhost: Vhost, vni: int) -> tuple[Any, ...]:
    """Everything the routed overlay holds in the VPC namespace."""
    ns = vhost.dp.vpc_ns(vni)
    return routes(ns), next_hops(ns, f"vx{vni}"), remote_macs(ns, f"vx{vni}")


def test_a_vhost_holds_one_next_hop_per_remote_vhost_and_a_route_per_block(routed: RoutedLab) -> None:
    h0, h1, h2 = routed.vhosts
    hop1, hop2 = vtep_link_local(h1.ip), vtep_link_local(h2.ip)
    assert hop1 == "fe80::c0a8:4d02" and vtep_mac(h1.ip) == "02:00:c0:a8:4d:02"
    assert overlay_state(h0, VPC_A.vni) == (
        {
            "10.1.0.64/26": ("vx6001", hop1),
            "10.1.1.128/26": ("vx6001", hop2),
            "10.1.0.30/32": ("vx6001", hop2),
        },
        {hop1: vtep_mac(h1.ip), hop2: vtep_mac(h2.ip)},
        {(vtep_mac(h1.ip), h1.ip), (vtep_mac(h2.ip), h2.ip)},
    )
    # h2's VM at the borrowed address is outside its blocks: a /32 on br0, else h0's block would win.
    assert routes(h2.dp.vpc_ns(VPC_A.vni))["10.1.0.30/32"] == ("br0", "")
    assert routes(h2.dp.vpc_ns(VPC_B.vni))[f"{UNDERLAY_NET}.2/32"] == ("br0", "")


def test_vx_is_an_l3_device_with_ipv6_but_no_address_and_br0_answers_arp(routed: RoutedLab) -> None:
    h0 = routed.vhosts[0]
    ns = h0.dp.vpc_ns(VPC_A.vni)

    def read(ipr: Any) -> tuple[Any, Any, list[Any]]:
        vx, br = ipr.link("get", ifname="vx6001")[0], ipr.link("get", ifname="br0")[0]
        return vx, br, [a for a in ipr.addr("dump", family=socket.AF_INET6) if a["index"] == vx["index"]]

    vx, br, addresses = in_ns(ns, read)
    assert vx.get("master") is None and str(vx.get("address")) == vtep_mac(h0.ip)
    assert addresses == []
    assert read_sysctl_elsewhere(ns, "net/ipv6/conf/vx6001/disable_ipv6") == "0"
    assert read_sysctl_elsewhere(ns, "net/ipv6/conf/br0/disable_ipv6") == "1"
    assert read_sysctl_elsewhere(ns, "net/ipv4/conf/br0/proxy_arp") == "1"
    assert read_sysctl_elsewhere(ns, "net/ipv4/neigh/br0/proxy_delay") == "0"
    assert {mac for mac, _ in remote_macs(ns, "vx6001")} == {vtep_mac(v.ip) for v in routed.vhosts[1:]}
    assert permanent_neighbours(ns) == set()  # no remote VM is pushed: nothing per VM
    assert br["index"] != vx["index"]


def test_the_same_peers_again_change_nothing(routed: RoutedLab) -> None:
    before = [overlay_state(v, vni) for v in routed.vhosts for vni in (VPC_A.vni, VPC_B.vni)]
    program(routed.vhosts)
    routed.vhosts[0].dp.ensure_vpc(VPC_A)
    assert [overlay_state(v, vni) for v in routed.vhosts for vni in (VPC_A.vni, VPC_B.vni)] == before


# ----------------------------------------------------------------------------- changes


@pytest.fixture
def pair() -> Iterator[list[Vhost]]:
    """Two vhosts of their own with VPC A routed (a0, a0s on h0; a1 on h1), for tests that change it."""
    with lab(2) as vhosts:
        for h, vhost in enumerate(vhosts):
            vhost.dp.ensure_vpc(VPC_A)
            assert all(r.ok for r in vhost.dp.create_vms([s for s in SPECS[h] if s.vni == VPC_A.vni]))
        program_pair(vhosts, [BLOCKS[VPC_A.vni][0], BLOCKS[VPC_A.vni][1]])
        yield vhosts


def program_pair(vhosts: list[Vhost], blocks: list[list[str]]) -> None:
    """Each of the two vhosts told of the other's blocks."""
    for h, vhost in enumerate(vhosts):
        other = vhosts[1 - h]
        vhost.dp.set_routed_peers(VPC_A.vni, [RoutedPeer(other.ip, tuple(blocks[1 - h]))], blocks[h])


def test_peers_and_prefixes_removed_stop_the_traffic_and_come_back(pair: list[Vhost]) -> None:
    h0, h1 = pair
    assert_pings(h0, "a0", ["10.1.0.70"])
    # h1's block withdrawn on h0 only: the route goes, the next hop stays; h0's pings stop.
    h0.dp.set_routed_peers(VPC_A.vni, [RoutedPeer(h1.ip, ())], BLOCKS[VPC_A.vni][0])
    assert routes(h0.dp.vpc_ns(VPC_A.vni)) == {}
    assert set(next_hops(h0.dp.vpc_ns(VPC_A.vni), "vx6001")) == {vtep_link_local(h1.ip)}
    assert_no_pings(h0, "a0", ["10.1.0.70"])
    # No peers at all: nothing of h1 is left on h0.
    h0.dp.set_routed_peers(VPC_A.vni, [], BLOCKS[VPC_A.vni][0])
    assert overlay_state(h0, VPC_A.vni) == ({}, {}, set())
    assert_no_pings(h0, "a0", ["10.1.0.70"])
    assert_no_pings(h1, "a1", ["10.1.0.10"])  # h1 still routes to h0, but the replies have no way back
    # Back, with h1 holding one more block: traffic flows again.
    program_pair(pair, [BLOCKS[VPC_A.vni][0], ["10.1.0.64/26", "10.1.1.64/26"]])
    assert routes(h0.dp.vpc_ns(VPC_A.vni)) == {
        "10.1.0.64/26": ("vx6001", vtep_link_local(h1.ip)),
        "10.1.1.64/26": ("vx6001", vtep_link_local(h1.ip)),
    }
    assert_pings(h0, "a0", ["10.1.0.70"])
    assert_pings(h1, "a1", ["10.1.0.10", "10.1.1.20"])


def test_a_prefix_moving_to_another_vhost_is_rerouted(pair: list[Vhost]) -> None:
    h0, h1 = pair
    stranger = f"{UNDERLAY_NET}.9"
    h0.dp.set_routed_peers(
        VPC_A.vni,
        [RoutedPeer(h1.ip, ("10.1.0.64/26",)), RoutedPeer(stranger, ("10.1.1.128/26",))],
        BLOCKS[VPC_A.vni][0],
    )
    h0.dp.set_routed_peers(VPC_A.vni, [RoutedPeer(h1.ip, ("10.1.0.64/26", "10.1.1.128/26"))], [])
    hop = vtep_link_local(h1.ip)
    state = overlay_state(h0, VPC_A.vni)
    assert state[0] == {
        "10.1.0.64/26": ("vx6001", hop),
        "10.1.1.128/26": ("vx6001", hop),
        # no local prefixes: h0's VMs are all outside them, each with its /32 on br0
        "10.1.0.10/32": ("br0", ""),
        "10.1.1.20/32": ("br0", ""),
    }
    assert state[1:] == ({hop: vtep_mac(h1.ip)}, {(vtep_mac(h1.ip), h1.ip)})
    assert_pings(h0, "a0", ["10.1.0.70", "10.1.1.20"])


def test_a_bridged_vpc_refuses_routed_peers_and_converges_to_routed(pair: list[Vhost]) -> None:
    h0, _h1 = pair
    bridged = replace(VPC_B, routed=False)
    h0.dp.ensure_vpc(bridged)
    h0.dp.set_vni_peers(bridged.vni, [f"{UNDERLAY_NET}.9"])
    with pytest.raises(FailedPrecondition, match="not routed"):
        h0.dp.set_routed_peers(bridged.vni, [], [])
    h0.dp.ensure_vpc(VPC_B)
    state = h0.dp.set_routed_peers(VPC_B.vni, [RoutedPeer(f"{UNDERLAY_NET}.9", ("10.1.0.64/26",))], [])
    assert (state.peers, state.routes, state.local_routes) == (1, 1, 0)
    ns = h0.dp.vpc_ns(VPC_B.vni)
    assert in_ns(ns, lambda ipr: ipr.link("get", ifname="vx6002")[0].get("master")) is None
    # The flood list of the bridged shape is gone: only the peer's derived MAC is left.
    assert remote_macs(ns, "vx6002") == {(vtep_mac(f"{UNDERLAY_NET}.9"), f"{UNDERLAY_NET}.9")}


def test_bad_peers_are_refused_before_anything_changes(pair: list[Vhost]) -> None:
    h0, _h1 = pair
    before = overlay_state(h0, VPC_A.vni)
    for peers, local, word in (
        ([RoutedPeer("10.0.0.300", ())], [], "vtep"),
        ([RoutedPeer(f"{UNDERLAY_NET}.9", ("10.1.0.1/26",))], [], "prefixes[0]"),
        ([RoutedPeer(f"{UNDERLAY_NET}.9", ("10.1.0.0/26; reboot",))], [], "prefixes[0]"),
        ([], ["0.0.0.0/0"], "local_prefixes[0]"),
    ):
        with pytest.raises(ValueError, match=re.escape(word)):
            h0.dp.set_routed_peers(VPC_A.vni, peers, local)
    assert overlay_state(h0, VPC_A.vni) == before
